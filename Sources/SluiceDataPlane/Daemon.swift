import CSluiceNetfilter
import Foundation
import Logging
import SluiceConfig
import SluiceCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

public struct DaemonError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// `sluice run`: owns the workers, the rules and the control socket.
///
/// Start: bind every queue first, then install the rules (so no packet is queued to a
/// queue nobody reads), then READY=1. Stop (SIGTERM/SIGINT): remove the rules, then stop
/// the workers and unbind (the kernel drops what is still queued: fail closed).
/// SIGHUP: re-read the config; unchanged SAs keep their state; rules are replaced
/// atomically (one nft transaction) and workers pick the new database between batches.
public final class Daemon: @unchecked Sendable {
    let configPath: String
    var logger: Logger
    var config: SluiceConfiguration
    var builder: RulesetBuilder
    var created = Firewall.Created()
    var workers: [Worker] = []
    let holder: DatabaseHolder
    /// Receivers' MSS per TCP flow, shared by all workers; survives reloads.
    let mssHints = MSSHints()
    /// With gso: this host's addresses, where decrypted TCP may be delivered merged.
    var localAddresses: LocalAddresses?
    let store: SequenceStore
    let started = monotonicNanos()
    var reloads: UInt64 = 0
    let configLock = Mutex<Void>(())
    /// Forced backend (tests and `--backend`), else detected.
    let forcedBackend: QueueBackend?

    public init(configPath: String, logger: Logger, backend: QueueBackend? = nil) throws {
        self.configPath = configPath
        self.logger = logger
        self.forcedBackend = backend
        do {
            config = try ConfigLoader.load(path: configPath)
        } catch let e as ConfigErrors {
            throw DaemonError("invalid configuration:\n\(e)")
        }
        for w in config.warnings { logger.warning("\(w)") }
        if config.passthrough {
            logger.warning("passthrough = true: a measurement mode; PROTECT traffic is queued and passed IN CLEAR")
        }
        self.logger.logLevel = Logger.Level(rawValue: config.logLevel) ?? .info
        do {
            store = try FileSequenceStore(directory: config.stateDir)
        } catch {
            throw DaemonError("\(error)")
        }
        let db: SecurityDatabase
        do {
            db = try DatabaseFactory.build(config, lanes: config.queues, store: store, previous: nil, logger: logger)
        } catch {
            throw DaemonError("cannot set up SAs: \(error)")
        }
        holder = DatabaseHolder(db)
        builder = RulesetBuilder(config: config, backend: .native)
    }

    public func run() throws -> Int32 {
        // Signals are taken synchronously by this thread only (sigwait): block them
        // before any other thread exists so every thread inherits the mask.
        var set = sigset_t()
        sigemptyset(&set)
        for s in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&set, s) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
        signal(SIGPIPE, SIG_IGN)

        let backend: QueueBackend
        if let forcedBackend {
            backend = forcedBackend
        } else {
            let (b, why) = try detect()
            backend = b
            if b == .xtables { logger.notice("\(why)") }
        }
        builder = RulesetBuilder(config: config, backend: backend)

        var opts = NFQueue.Options()
        opts.receiveBuffer = config.receiveBuffer
        opts.maxLength = UInt32(config.queueMaxLen)
        opts.failOpen = config.fail == .open
        for i in 0..<config.queues {
            let q = UInt16(config.queueBase + i)
            let twin = config.gso ? UInt16(config.queueBase + config.queues + i) : nil
            do {
                let nfq = try NFQueue(queue: q, gsoQueue: twin, options: opts)
                let w = Worker(index: i, queue: nfq, holder: holder, markShift: config.markShift,
                               passthrough: config.passthrough, batch: config.batch)
                let log = logger
                w.busyPollNanos = UInt64(config.busyPollMicros) * 1000
                w.mssHints = mssHints
                if config.gso {
                    if localAddresses == nil { localAddresses = LocalAddresses() }
                    w.localAddresses = localAddresses
                }
                w.onVerdictError = { code in log.debug("kernel refused a verdict on queue \(q): \(Errno(code))") }
                workers.append(w)
            } catch {
                throw DaemonError("\(error)")
            }
        }
        // Raw sockets (CAP_NET_RAW) send what the kernel cannot take back in a verdict:
        // family-changing tunnel packets and IPv4 ESP sealed for forwarded traffic.
        if config.associations.contains(where: { $0.config.direction == .outbound }) {
            let mark = RulesetBuilder.verdictMark(original: 0, shift: config.markShift)
            for w in workers {
                let r4 = sluice_raw_open(4, mark), r6 = sluice_raw_open(6, mark)
                if r4 < 0 || r6 < 0 {
                    if config.gso {
                        // Every sealed TCP segment leaves on these sockets: without them TCP would stop.
                        throw DaemonError("cannot open raw sockets (\(Errno(-min(r4, r6)))): they need CAP_NET_RAW; gso = true sends sealed TCP segments on them (set gso = false to run without)")
                    }
                    logger.warning("cannot open raw sockets (\(Errno(-min(r4, r6)))): forwarded IPv4 and 4-in-6/6-in-4 tunnel packets will fail as inject errors")
                }
                w.rawSockets = (r4, r6)
            }
        }
        let group = DispatchGroup()
        for w in workers {
            group.enter()
            let t = Thread { w.run(); group.leave() }
            t.name = "sluice-q\(w.stats.queue)"
            t.start()
        }

        do {
            created = try Firewall.install(builder)
        } catch {
            workers.forEach { $0.stop() }
            _ = group.wait(timeout: .now() + 2)
            Firewall.remove(builder, logger: logger)
            throw DaemonError("\(error)")
        }

        let control: ControlServer
        do {
            control = try ControlServer(path: config.controlSocket, logger: logger) { [unowned self] cmd in self.control(cmd) }
        } catch {
            Firewall.remove(builder, logger: logger)
            workers.forEach { $0.stop() }
            throw DaemonError("\(error)")
        }
        group.enter()
        let ct = Thread { control.run(); group.leave() }
        ct.name = "sluice-control"
        ct.start()

        var metrics: MetricsServer? = nil
        if let listen = config.metricsListen {
            let exporter = MetricsExporter()
            do {
                let server = try MetricsServer(host: listen.host, port: listen.port) { [unowned self] in
                    exporter.render(self.snapshot())
                }
                group.enter()
                let mt = Thread { server.run(); group.leave() }
                mt.name = "sluice-metrics"
                mt.start()
                metrics = server
                logger.info("Prometheus metrics on http://\(listen.host.contains(":") ? "[\(listen.host)]" : listen.host):\(listen.port)/metrics")
            } catch {
                logger.error("\(error); continuing without metrics")
            }
        }
        let watchdog = startWatchdog()
        localAddresses?.start()
        let mode = config.passthrough ? " in PASSTHROUGH mode (packets are queued and accepted unchanged)" : ""
        logger.info("sluice running\(mode): \(config.queues) queue(s) from \(config.queueBase), backend \(backend.rawValue), \(config.associations.count) SA(s), \(config.policies.count) polic\(config.policies.count == 1 ? "y" : "ies"), control socket \(config.controlSocket)")
        SystemdNotify.send("READY=1\nSTATUS=forwarding on \(config.queues) queue(s)\nMAINPID=\(getpid())")

        var sig: Int32 = 0
        loop: while true {
            sigwait(&set, &sig)
            switch sig {
            case SIGHUP:
                SystemdNotify.send("RELOADING=1")
                reload()
                SystemdNotify.send("READY=1")
            default:
                logger.info("signal \(sig): stopping")
                break loop
            }
        }
        SystemdNotify.send("STOPPING=1")
        watchdog?.clear()
        localAddresses?.stop()
        Firewall.remove(builder, created: created, logger: logger)
        workers.forEach { $0.stop() }
        control.stop()
        metrics?.stop()
        if group.wait(timeout: .now() + 5) == .timedOut { logger.warning("workers did not stop within 5 s") }
        for w in workers { w.nfq?.unbind() }
        logger.info("sluice stopped; rules removed")
        return 0
    }

    func detect() throws -> (QueueBackend, String) {
        do { return try Firewall.detectBackend() } catch { throw DaemonError("\(error)") }
    }

    /// SIGHUP: a new config that fails validation changes nothing.
    func reload() {
        configLock.withLock { _ in
            let next: SluiceConfiguration
            do {
                next = try ConfigLoader.load(path: configPath)
            } catch {
                logger.error("reload refused, keeping the running configuration:\n\(error)")
                return
            }
            if next.queues != config.queues || next.queueBase != config.queueBase || next.markShift != config.markShift
                || next.fail != config.fail || next.stateDir != config.stateDir || next.controlSocket != config.controlSocket {
                logger.error("reload refused: queues, queue_base, mark_shift, fail, state_dir and control_socket need a restart")
                return
            }
            do {
                let db = try DatabaseFactory.build(next, lanes: config.queues, store: store, previous: holder.database, logger: logger)
                let nextBuilder = RulesetBuilder(config: next, backend: builder.backend)
                holder.replace(db)
                if nextBuilder.nftScript() != builder.nftScript() { try Firewall.install(nextBuilder, reload: true) }
                builder = nextBuilder
                config = next
                reloads += 1
                logger.info("reloaded: \(next.associations.count) SA(s), \(next.policies.count) policies")
            } catch {
                logger.error("reload failed, keeping the running configuration: \(error)")
            }
        }
    }

    /// Sends WATCHDOG=1 only while every worker keeps going round its loop.
    func startWatchdog() -> Flag? {
        guard let usec = SystemdNotify.watchdogMicros else { return nil }
        let alive = Flag()
        let ws = workers
        let log = logger
        let t = Thread {
            let limit = usec * 1000
            while alive.isSet {
                let now = monotonicNanos()
                let stuck = ws.filter { now &- $0.stats.heartbeat.load > limit / 2 }
                if stuck.isEmpty {
                    SystemdNotify.send("WATCHDOG=1")
                } else {
                    log.error("worker(s) for queue \(stuck.map { String($0.stats.queue) }.joined(separator: ",")) made no progress; withholding WATCHDOG=1")
                }
                usleep(useconds_t(min(usec / 3, 5_000_000)))
            }
        }
        t.name = "sluice-watchdog"
        t.start()
        return alive
    }

    func snapshot() -> StatsSnapshot {
        let info = StatsSnapshot.DaemonInfo(
            pid: getpid(), uptimeSeconds: Double(monotonicNanos() - started) / 1e9, backend: builder.backend.rawValue,
            config: configPath, failMode: config.fail.rawValue, passthrough: config.passthrough, reloads: reloads)
        let rules = (try? Firewall.run("nft", ["-j", "list", "table", "inet", RulesetBuilder.tableName]))?.output ?? ""
        return StatsSnapshot.make(workers: workers, database: holder.database, info: info,
                                  ruleDrops: RulesetBuilder.kernelDrops(nftJSON: rules))
    }

    func control(_ command: String) -> [String: Any]? {
        switch command {
        case "stats":
            let snap = snapshot()
            guard let data = try? JSONEncoder().encode(snap),
                  let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                return ["error": "could not encode stats"]
            }
            return obj
        default:
            return nil
        }
    }
}

/// A shareable stop flag.
final class Flag: Sendable {
    private let value = Atomic<Bool>(true)
    var isSet: Bool { value.load(ordering: .relaxed) }
    func clear() { value.store(false, ordering: .relaxed) }
}
