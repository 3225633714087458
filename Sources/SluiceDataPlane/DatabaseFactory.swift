import Logging
import SluiceConfig
import SluiceCore

/// Turns a validated configuration into a database snapshot. On reload, SAs whose
/// settings are unchanged are carried over as the same objects, so their sequence
/// counters, replay windows and counters continue; changed or removed SAs are dropped
/// (their keys are wiped when the last packet using them is done).
public enum DatabaseFactory {
    public static func build(_ cfg: SluiceConfiguration, lanes: Int, store: SequenceStore, previous: SecurityDatabase?,
                             logger: Logger) throws -> SecurityDatabase {
        let now = monotonicNanos() / 1_000_000_000
        var sas: [SecurityAssociation] = []
        for entry in cfg.associations {
            if let old = previous?.association(named: entry.config.name), old.config.isUnchanged(comparedTo: entry.config) {
                sas.append(old)
                continue
            }
            let name = entry.config.name
            let log = logger
            let sa = try SecurityAssociation(config: entry.config, lanes: lanes, store: store, now: now) { event in
                switch event {
                case let .softLifetime(_, what): log.notice("SA \(name): soft lifetime (\(what)) reached; rekey soon")
                case let .hardLifetime(_, what): log.warning("SA \(name): hard lifetime (\(what)) reached; SA stopped")
                case .sequenceExhausted: log.error("SA \(name): sequence numbers exhausted; SA stopped until rekeyed")
                }
            }
            sas.append(sa)
        }
        return try SecurityDatabase(policies: cfg.policies, associations: sas,
                                    defaultOutbound: cfg.defaultOutbound, defaultInbound: cfg.defaultInbound)
    }
}
