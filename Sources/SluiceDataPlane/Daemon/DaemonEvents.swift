import Foundation
import Logging
import SluiceConfig
import SluiceCore
import SluiceIKE
#if canImport(Glibc)
import Glibc
#endif

/// SA events: what the workers post, handled on the control plane's thread.
extension Daemon {
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
                    ike?.post { a, now in a.softLifetime(sa: name, now: now) }
                case let .hardLifetime(name, generation, what):
                    let removed = manager.expire(sa: name, generation: generation)
                    logger.warning("SA \(name): hard lifetime (\(what)) reached\(removed ? "; SA removed, its traffic is dropped (no_sa) until it has a new key" : "")")
                    if removed { ike?.post { a, now in a.hardLifetime(sa: name, now: now) } }
                case let .sequenceExhausted(name, generation):
                    let removed = manager.expire(sa: name, generation: generation)
                    logger.error("SA \(name): sequence numbers exhausted\(removed ? "; SA removed" : ""): configure a new key")
                case let .noSA(policy):
                    let now = monotonicNanos() / 1_000_000_000
                    if let ike, let child = IKEAgent.child(fromTrapOrigin: policy) {
                        // An acquire: the agent negotiates (at most one at a time per child) and
                        // logs it; the packets wait in the workers' hold queues meanwhile.
                        ike.post { a, now in a.acquire(child: child, now: now) }
                        if now >= (lastNoSALog[policy] ?? 0) {
                            logger.info("child \(child): traffic but no CHILD_SA: held while one is negotiated (on-demand children), else dropped (no_sa)")
                            lastNoSALog[policy] = now + 10
                        }
                    } else if now >= (lastNoSALog[policy] ?? 0) {
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
}
