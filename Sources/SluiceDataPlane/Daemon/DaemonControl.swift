import Foundation
import Logging
import SluiceConfig
import SluiceCore
#if canImport(Glibc)
import Glibc
#endif

/// What the daemon shows the outside: the systemd watchdog, stats snapshots, control requests.
extension Daemon {
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
            config: configPath, failMode: st.config.fail.rawValue, passthrough: st.config.passthrough, reloads: st.reloads,
            version: SluiceVersion.number, openssl: SluiceVersion.openSSL)
        let rules = (try? Firewall.run("nft", ["-j", "list", "table", "inet", RulesetBuilder.tableName]))?.output ?? ""
        var snap = StatsSnapshot.make(workers: workers, database: manager.database, info: info,
                                      ruleDrops: RulesetBuilder.kernelDrops(nftJSON: rules))
        if let answer = ike?.ask(timeout: 1, { a, now in (a.status(now: now), a.counters) }) {
            (snap.ikeSAs, snap.ikeCounters) = (answer.0, answer.1)
        }
        return snap
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
