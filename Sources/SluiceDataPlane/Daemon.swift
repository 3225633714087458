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

/// `sluice run`: owns the workers, the rules, the SA manager and the control socket.
///
/// Start: bind every queue first, then install the rules (so no packet is queued to a
/// queue nobody reads), then READY=1. Stop (SIGTERM/SIGINT): remove the rules, then stop
/// the workers and unbind (the kernel drops what is still queued: fail closed), then write
/// the exact replay marks. SIGHUP: see `reload`.
public final class Daemon: @unchecked Sendable {
    /// What readers (stats, metrics) and reload see together: replaced whole, never edited.
    struct State: Sendable {
        var config: SluiceConfiguration
        var builder: RulesetBuilder
        var reloads: UInt64
    }

    let configPath: String
    var logger: Logger
    let state: Mutex<State>
    var created = Firewall.Created()
    var workers: [Worker] = []
    /// SAs and policies: the one place that changes them (reload now, IKE next).
    let manager: SAManager
    let writer = BackgroundWriter()
    let events: EventQueue
    let eventSignal = DispatchSemaphore(value: 0)
    /// Receivers' MSS per TCP flow, shared by all workers; survives reloads.
    let mssHints = MSSHints()
    /// With gso: this host's addresses, where decrypted TCP may be delivered merged.
    var localAddresses: LocalAddresses?
    let started = monotonicNanos()
    /// Serialises reloads (SIGHUP) with each other.
    let reloadLock = Mutex<Void>(())
    /// Forced backend (tests and `--backend`), else detected.
    let forcedBackend: QueueBackend?

    var config: SluiceConfiguration { state.withLock { $0.config } }

    public init(configPath: String, logger: Logger, backend: QueueBackend? = nil) throws {
        self.configPath = configPath
        self.logger = logger
        self.forcedBackend = backend
        let config: SluiceConfiguration
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
        let store: FileStateStore
        do {
            store = try FileStateStore(directory: config.stateDir)
        } catch {
            throw DaemonError("\(error)")
        }
        let signal = eventSignal
        events = EventQueue(capacity: 4096) { signal.signal() }
        manager = SAManager(settings: Daemon.settings(config), store: store, writer: writer, events: events,
                            clock: { monotonicNanos() / 1_000_000_000 })
        do {
            manager.commit(try manager.prepare(associations: config.associations.map(\.config), policies: config.policies))
        } catch {
            throw DaemonError("cannot set up SAs: \(error)")
        }
        state = Mutex(State(config: config, builder: RulesetBuilder(config: config, backend: .native), reloads: 0))
    }

    static func settings(_ c: SluiceConfiguration) -> SAManager.Settings {
        SAManager.Settings(lanes: c.queues, replayMarkInterval: UInt64(c.replayMarkInterval),
                           defaultOutbound: c.defaultOutbound, defaultInbound: c.defaultInbound)
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
        let config = self.config
        let builder = RulesetBuilder(config: config, backend: backend)
        state.withLock { $0.builder = builder }

        var opts = NFQueue.Options()
        opts.receiveBuffer = config.receiveBuffer
        opts.maxLength = UInt32(config.queueMaxLen)
        opts.failOpen = config.fail == .open
        for i in 0..<config.queues {
            let q = UInt16(config.queueBase + i)
            let twin = config.gso ? UInt16(config.queueBase + config.queues + i) : nil
            do {
                let nfq = try NFQueue(queue: q, gsoQueue: twin, options: opts)
                let w = Worker(index: i, queue: nfq, holder: manager, markShift: config.markShift,
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
        writer.start()
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
        let eventsRunning = Flag()
        group.enter()
        let et = Thread { [unowned self] in self.handleEvents(while: eventsRunning); group.leave() }
        et.name = "sluice-events"
        et.start()
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
        Firewall.remove(state.withLock { $0.builder }, created: created, logger: logger)
        workers.forEach { $0.stop() }
        control.stop()
        metrics?.stop()
        eventsRunning.clear()
        eventSignal.signal()
        if group.wait(timeout: .now() + 5) == .timedOut { logger.warning("workers did not stop within 5 s") }
        for w in workers { w.nfq?.unbind() }
        // No worker runs now: the exact replay marks, so a restart refuses replays and loses nothing.
        writer.stop()
        for failure in manager.persistOnStop() { logger.error("replay mark not written at stop: \(failure)") }
        logger.info("sluice stopped; rules removed")
        return 0
    }

    func detect() throws -> (QueueBackend, String) {
        do { return try Firewall.detectBackend() } catch { throw DaemonError("\(error)") }
    }

    /// SIGHUP, in the order that leaves nothing half done: read and validate the file;
    /// refuse settings that only take effect at start (each named with FILE:LINE); build
    /// every new SA and check the database they make (nothing changes yet); install the
    /// nftables transaction; only then swap the SAs and policies in, and publish the new
    /// state. A failure at any step leaves the running SAs, policies and rules in place.
    func reload() {
        reloadLock.withLock { _ in
            let running = state.withLock { $0 }
            let next: SluiceConfiguration
            do {
                next = try ConfigLoader.load(path: configPath)
            } catch {
                logger.error("reload refused, keeping the running configuration:\n\(error)")
                return
            }
            let restart = next.restartRequired(comparedTo: running.config)
            if !restart.isEmpty {
                logger.error("reload refused, keeping the running configuration:\n\(restart.map(\.description).joined(separator: "\n"))")
                return
            }
            for w in next.warnings { logger.warning("\(w)") }
            let plan: SAManager.Plan
            do {
                plan = try manager.prepare(associations: next.associations.map(\.config), policies: next.policies,
                                           settings: Daemon.settings(next))
            } catch {
                logger.error("reload refused, keeping the running configuration: \(error)")
                return
            }
            let nextBuilder = RulesetBuilder(config: next, backend: running.builder.backend)
            if nextBuilder.nftScript() != running.builder.nftScript() {
                do { try Firewall.install(nextBuilder, reload: true) } catch {
                    logger.error("reload failed, keeping the running configuration (SAs, policies and rules unchanged): \(error)")
                    return
                }
            }
            manager.commit(plan)
            logger.logLevel = Logger.Level(rawValue: next.logLevel) ?? .info
            state.withLock { $0 = State(config: next, builder: nextBuilder, reloads: running.reloads + 1) }
            for name in plan.skippedExpired { logger.warning("SA \(name): not installed, its key reached the hard lifetime; configure a new key") }
            func list(_ names: [String]) -> String { names.isEmpty ? "-" : names.joined(separator: ",") }
            logger.info("reloaded: \(next.associations.count) SA(s) (added \(list(plan.added)), changed \(list(plan.changed)), removed \(list(plan.removed))), \(next.policies.count) policies")
        }
    }

    /// The control plane's side of the event queue: logs each event once, removes SAs
    /// whose hard lifetime passed (their traffic is then dropped as no_sa, never sent in
    /// clear), and checks time lifetimes of idle SAs once a second.
    func handleEvents(while running: Flag) {
        var lastNoSALog: [String: UInt64] = [:]
        while running.isSet {
            _ = eventSignal.wait(timeout: .now() + 1)
            manager.tick()
            for e in events.drain() {
                switch e {
                case let .softLifetime(name, _, what):
                    logger.notice("SA \(name): soft lifetime (\(what)) reached; rekey soon")
                case let .hardLifetime(name, generation, what):
                    let removed = manager.expire(sa: name, generation: generation)
                    logger.warning("SA \(name): hard lifetime (\(what)) reached\(removed ? "; SA removed, its traffic is dropped (no_sa) until it has a new key" : "")")
                case let .sequenceExhausted(name, generation):
                    let removed = manager.expire(sa: name, generation: generation)
                    logger.error("SA \(name): sequence numbers exhausted\(removed ? "; SA removed" : ""): configure a new key")
                case let .noSA(policy):
                    let now = monotonicNanos() / 1_000_000_000
                    if now >= (lastNoSALog[policy] ?? 0) {
                        logger.warning("policy \(policy): PROTECT traffic but no SA; dropped (no_sa)")
                        lastNoSALog[policy] = now + 10
                    }
                case let .stateWriteFailed(name, why):
                    logger.error("SA \(name): cannot make its state durable: \(why)")
                }
            }
            let lost = events.dropped.exchange(0, ordering: .relaxed)
            if lost > 0 { logger.error("\(lost) SA event(s) lost: the event queue was full") }
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
                    log.error("worker(s) for queue \(stuck.map { String($0.stats.queue) }.joined(separator: ",")) has not come round its receive loop; withholding WATCHDOG=1")
                }
                usleep(useconds_t(min(usec / 3, 5_000_000)))
            }
        }
        t.name = "sluice-watchdog"
        t.start()
        return alive
    }

    func snapshot() -> StatsSnapshot {
        let st = state.withLock { $0 }
        let info = StatsSnapshot.DaemonInfo(
            pid: getpid(), uptimeSeconds: Double(monotonicNanos() - started) / 1e9, backend: st.builder.backend.rawValue,
            config: configPath, failMode: st.config.fail.rawValue, passthrough: st.config.passthrough, reloads: st.reloads)
        let rules = (try? Firewall.run("nft", ["-j", "list", "table", "inet", RulesetBuilder.tableName]))?.output ?? ""
        return StatsSnapshot.make(workers: workers, database: manager.database, info: info,
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
