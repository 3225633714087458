import CSluiceNetfilter
import Foundation
import Logging
import SluiceConfig
import SluiceCore
import SluiceIKE
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
    /// The workers' NFQUEUE bindings, unbound at stop.
    var queues: [NFQueue] = []
    /// SAs and policies: the one place that changes them (reload, IKE).
    let manager: SAManager
    /// Sequence counters, replay marks and every counter of SAs and workers (doc/compartments.md).
    let arena: SharedArena
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
    /// The IKE agent's thread, when the config has connections.
    var ike: IKEService?
    /// False until run() installed the first rules: runtime changes before that are
    /// rendered by that first install.
    let rulesLive = Atomic<Bool>(true)

    var config: SluiceConfiguration { state.withLock { $0.config } }
    static let arenaCells = 1 << 20

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
        do {
            // 64 MiB of address space; memory only for the cells in use (a cell per SA and
            // lane, one more per SA for its sequence or marks, a few per worker).
            arena = try SharedArena(cells: Daemon.arenaCells, name: "sluice-sa")
        } catch {
            throw DaemonError("\(error)")
        }
        manager = SAManager(settings: Daemon.settings(config), store: store, writer: writer, events: events,
                            arena: arena, clock: { monotonicNanos() / 1_000_000_000 })
        do {
            manager.commit(try manager.prepare(associations: config.associations.map(\.config), policies: config.policies))
        } catch {
            throw DaemonError("cannot set up SAs: \(error)")
        }
        state = Mutex(State(config: config, builder: RulesetBuilder(config: config, backend: .native), reloads: 0))
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
        do { ike = try prepareIKE(config) } catch { throw DaemonError("\(error)") }
        // Rules from everything the manager holds: the file's SAs and policies and the IKE
        // children's trap policies, so no child's traffic leaves in clear from the first packet.
        let entries = manager.entries
        let builder = RulesetBuilder(config: config, policies: entries.policies, associations: entries.associations, backend: backend)
        state.withLock { $0.builder = builder }

        var opts = NFQueue.Options()
        opts.receiveBuffer = config.receiveBuffer
        opts.maxLength = UInt32(config.queueMaxLen)
        opts.failOpen = config.fail == .open
        // Raw sockets (CAP_NET_RAW) send what the kernel cannot take back in a verdict:
        // family-changing tunnel packets and IPv4 ESP sealed for forwarded traffic. Opened
        // whatever the config holds now, since a reload may add the first outbound SA.
        let mark = RulesetBuilder.verdictMark(original: 0, shift: config.markShift)
        let needed = config.associations.contains { $0.config.direction == .outbound }
        for i in 0..<config.queues {
            let q = UInt16(config.queueBase + i)
            let twin = config.gso ? UInt16(config.queueBase + config.queues + i) : nil
            let nfq: NFQueue
            do { nfq = try NFQueue(queue: q, gsoQueue: twin, options: opts) } catch { throw DaemonError("\(error)") }
            queues.append(nfq)
            let r4 = sluice_raw_open(4, mark), r6 = sluice_raw_open(6, mark)
            if r4 < 0 || r6 < 0 {
                let why = Errno(-min(r4, r6))
                if config.gso && needed {
                    // Every sealed TCP segment leaves on these sockets: without them TCP would stop.
                    throw DaemonError("cannot open raw sockets (\(why)): they need CAP_NET_RAW; gso = true sends sealed TCP segments on them (set gso = false to run without)")
                }
                if i == 0 {
                    let message: Logger.Message = "cannot open raw sockets (\(why)): forwarded IPv4 and 4-in-6/6-in-4 tunnel packets will fail as inject errors"
                    if needed { logger.warning(message) } else { logger.debug(message) }
                }
            }
            let w = Worker(index: i, io: KernelIO(queueSocket: nfq.fd, raw4: r4, raw6: r6), queueNumber: q, holder: manager,
                           markShift: config.markShift, passthrough: config.passthrough, batch: config.batch,
                           stats: WorkerStats(queue: Int(q), arena: arena))
            let log = logger
            w.busyPollNanos = UInt64(config.busyPollMicros) * 1000
            w.holdQueue.limits = HoldQueue.Limits(config.ike)
            w.mssHints = mssHints
            if config.gso {
                if localAddresses == nil { localAddresses = LocalAddresses() }
                w.localAddresses = localAddresses
            }
            w.onVerdictError = { code in log.debug("kernel refused a verdict on queue \(q): \(Errno(code))") }
            // Children that negotiate on demand hold their first packets (trap, and dpd_action
            // trap/restart after a dead peer); start_action = "none" waits for the peer: drop.
            let holding = Set(config.connections.flatMap { $0.children }.filter { $0.startAction != .none || $0.dpdAction != .clear }.map(\.name))
            if !holding.isEmpty { w.holds = { IKEAgent.child(fromTrapOrigin: $0).map(holding.contains) ?? false } }
            workers.append(w)
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

        rulesLive.store(true, ordering: .relaxed)
        ike?.start()

        let control: ControlServer
        do {
            control = try ControlServer(path: config.controlSocket, logger: logger) { [unowned self] cmd, request in
                self.control(cmd) ?? self.ikeControl(cmd, request)
            }
        } catch {
            ike?.stop()
            Firewall.remove(state.withLock { $0.builder }, logger: logger)
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
        let ikeNote = config.connections.isEmpty ? "" : ", \(config.connections.count) IKE connection(s)"
        logger.info("sluice running\(mode): \(config.queues) queue(s) from \(config.queueBase), backend \(backend.rawValue), \(config.associations.count) SA(s), \(config.policies.count) polic\(config.policies.count == 1 ? "y" : "ies")\(ikeNote), control socket \(config.controlSocket)")
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
        // Peers hear that our SAs go (one delete each) before the rules and SAs do.
        ike?.stop()
        Firewall.remove(state.withLock { $0.builder }, created: created, logger: logger)
        workers.forEach { $0.stop() }
        control.stop()
        metrics?.stop()
        eventsRunning.clear()
        eventSignal.signal()
        if group.wait(timeout: .now() + 5) == .timedOut { logger.warning("workers did not stop within 5 s") }
        for q in queues { q.unbind() }
        // No worker runs now: the exact replay marks, so a restart refuses replays and loses nothing.
        writer.stop()
        for failure in manager.persistOnStop() { logger.error("replay mark not written at stop: \(failure)") }
        logger.info("sluice stopped; rules removed")
        return 0
    }

    func detect() throws -> (QueueBackend, String) {
        do { return try Firewall.detectBackend() } catch { throw DaemonError("\(error)") }
    }
}

/// A shareable stop flag.
final class Flag: Sendable {
    private let value = Atomic<Bool>(true)
    var isSet: Bool { value.load(ordering: .relaxed) }
    func clear() { value.store(false, ordering: .relaxed) }
}
