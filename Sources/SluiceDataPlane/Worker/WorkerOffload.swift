import CSluiceNetfilter
import SluiceCore

/// The offloads: whole TCP packets from the GSO twin queue cut into ESP segments, and
/// decrypted TCP for this host merged before the kernel's stack sees it.
extension Worker {
    /// A GSO packet: cut, sealed and sent here as ESP packets on the raw socket; the
    /// original then gets DROP (it left as ESP, so it is not counted as a drop) and the
    /// result is nil. BYPASS and refusals come back as an `Outcome` to settle as usual.
    func handleWhole(_ msg: sluice_nfq_message, slot: Int, database db: SecurityDatabase, context ctx: ProcessingContext) -> Outcome? {
        let whole: WholeOutcome
        do {
            try packet.load(io.payload(slot: slot, msg))
            whole = PacketProcessor.processWhole(&packet, scratch: &segment, database: db, context: ctx) { esp in
                queueRaw(esp)
            }
        } catch {
            whole = .drop(error)
        }
        switch whole {
        case .unchanged: return .unchanged
        case let .drop(reason): return .drop(reason)
        case let .segmented(count, failed, reason):
            stats.wholePackets.add()
            stats.segments.add(UInt64(count))
            if count > 0 { stats.sealed.add() }
            if let reason, failed > 0 { stats.drop(reason, count: UInt64(failed)) }
            verdict(msg, accept: false, mark: nil, rewritten: false)
            return nil
        }
    }

    /// Offers a decrypted packet to the merge. True when it was taken: appended (its own
    /// verdict is DROP: its bytes travel in the first packet's) or made the start of a new
    /// merge (its verdict waits for `closeMerge`).
    func tryMerge(_ msg: sluice_nfq_message, mark: UInt32) -> Bool {
        guard let h = packet.withBytes({ try? IPHeaderInfo.parse($0) }), h.proto == IPProto.tcp,
              !mustInject(msg, sourceIsLocal: false), locals.contains(h.dst) else {
            closeMerge()
            return false
        }
        if merge.count > 0 && mergeFirst.queue == msg.queue && packet.withBytes({ merge.append($0, header: h) }) {
            stats.coalesced.add()
            verdict(msg, accept: false, mark: nil, rewritten: false)
            return true
        }
        closeMerge()
        guard packet.withBytes({ merge.start($0, header: h) }) else { return false }
        mergeFirst = msg
        mergeMark = mark
        return true
    }

    /// Sends the verdict for the merge in progress: its first packet, now carrying all of it.
    func closeMerge() {
        guard merge.count > 0 else { return }
        merge.finish()
        verdict(mergeFirst, accept: true, mark: mergeMark, rewritten: true, from: merge.buffer)
        merge.reset()
    }
}
