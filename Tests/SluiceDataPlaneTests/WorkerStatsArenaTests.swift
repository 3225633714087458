import Testing
@testable import SluiceCore
@testable import SluiceDataPlane

/// A worker's counters in the shared arena: the supervisor keeps the run of cells for a
/// queue, a worker process views it, and the counts outlive the worker (doc/compartments.md).
@Suite("Worker counters in the shared arena")
struct WorkerStatsArenaTests {
    @Test("a worker's view counts into the supervisor's run, and its successor continues the totals")
    func viewAndSuccessor() throws {
        let arena = try SharedArena(cells: 64)
        let kept = WorkerStats(queue: 3, arena: arena)
        #expect(arena.cellsInUse == WorkerStats.cells)
        let m = try SharedArena(mapping: arena.fd, cells: 64)
        do {
            let worker = try #require(WorkerStats(queue: 3, viewing: kept.firstCell, of: m))
            worker.received.add(10)
            worker.drop(.icvMismatch, count: 2)
            worker.recordLatency(3_000, .inbound)
            worker.heartbeat.store(77)
        }
        #expect(kept.received.load == 10 && kept.dropped.load == 2 && kept.drops[DropReason.icvMismatch.index].load == 2)
        #expect(kept.latency[WorkerStats.LatencyClass.inbound.rawValue][2].load == 1 && kept.heartbeat.load == 77)
        #expect(arena.cellsInUse == WorkerStats.cells, "a view gives nothing back")
        let successor = try #require(WorkerStats(queue: 3, viewing: kept.firstCell, of: m))
        successor.received.add(5)
        #expect(kept.received.load == 15, "a restart does not reset the totals")
        #expect(WorkerStats(queue: 3, viewing: 64 - WorkerStats.cells + 1, of: m) == nil, "a run past the arena is refused")
        #expect(WorkerStats(queue: 3, viewing: -1, of: m) == nil)
    }

    @Test("every counter has its own word, and the run goes back with its owner")
    func layout() throws {
        let arena = try SharedArena(cells: 64)
        do {
            let s = WorkerStats(queue: 0, arena: arena)
            let all = [s.received, s.accepted, s.dropped, s.sealed, s.opened, s.unchanged, s.icmpSent, s.bytesIn, s.bytesOut,
                       s.batches, s.receiveOverruns, s.verdictErrors, s.ioErrors, s.maxBatch, s.injected, s.injectErrors,
                       s.wholePackets, s.segments, s.coalesced, s.held, s.heldSent, s.heartbeat]
                + s.drops + s.latency.flatMap { $0 } + s.latencySum
            #expect(all.count == WorkerStats.words)
            #expect(Set(all.map { Int(bitPattern: $0.word.word) }).count == all.count, "no two counters share a word")
        }
        #expect(arena.cellsInUse == 0)
    }
}
