import Dispatch
import Foundation
import Logging
import SluiceCore
import SluiceIKE
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Runs the IKE agent on its own thread (`sluice-ike`): datagrams from the sockets, the
/// clock once a second, and work handed over by other threads (control requests, acquires
/// and lifetime events from the workers), all on this one thread, so the agent needs no locks.
final class IKEService: @unchecked Sendable {
    let agent: IKEAgent
    let sockets: IKESockets
    let logger: Logger
    /// A pipe: other threads write a byte to wake the agent's poll.
    private let wakeRead: Int32
    private let wakeWrite: Int32
    /// Work for the agent's thread; guarded by `inboxLock`.
    private var inbox: [(IKEAgent, Double) -> Void] = []
    private let inboxLock = NSLock()
    private let running = Atomic<Bool>(true)
    private let done = DispatchSemaphore(value: 0)

    init(agent: IKEAgent, sockets: IKESockets, logger: Logger) throws {
        self.agent = agent
        self.sockets = sockets
        self.logger = logger
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw DaemonError("pipe: \(Errno(errno))") }
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        wakeRead = fds[0]
        wakeWrite = fds[1]
    }

    static func now() -> Double { Double(monotonicNanos()) / 1e9 }

    /// Hands work to the agent's thread (never blocks the caller).
    func post(_ work: @escaping (IKEAgent, Double) -> Void) {
        inboxLock.withLock { inbox.append(work) }
        wake()
    }

    private func wake() {
        var one: UInt8 = 1
        _ = write(wakeWrite, &one, 1)
    }

    /// Runs `work` on the agent's thread and waits for its answer (control requests).
    func ask<T>(timeout: Double = 3, _ work: @escaping (IKEAgent, Double) -> T) -> T? {
        let box = AnswerBox<T>()
        let sem = DispatchSemaphore(value: 0)
        post { a, now in
            box.value = work(a, now)
            sem.signal()
        }
        guard sem.wait(timeout: .now() + timeout) == .success else { return nil }
        return box.value
    }

    func start() {
        let t = Thread { [self] in
            agent.start(now: Self.now())
            var lastTick = Self.now()
            while running.load(ordering: .relaxed) {
                let received = sockets.receive(timeoutMs: 250, wake: wakeRead)
                let now = Self.now()
                for r in received {
                    if r.isKeepalive { agent.keepaliveReceived() } else { agent.receive(r.bytes, from: r.from, to: r.to, now: now) }
                }
                let work = inboxLock.withLock { () -> [(IKEAgent, Double) -> Void] in defer { inbox = [] }; return inbox }
                for w in work { w(agent, now) }
                if now - lastTick >= 1 {
                    agent.tick(now: now)
                    lastTick = now
                }
            }
            agent.shutdown(now: Self.now())
            sockets.close()
            close(wakeRead)
            close(wakeWrite)
            done.signal()
        }
        t.name = "sluice-ike"
        t.start()
    }

    /// Deletes every IKE SA (one message to each peer) and stops the thread.
    func stop() {
        running.store(false, ordering: .relaxed)
        wake()
        if done.wait(timeout: .now() + 3) == .timedOut { logger.warning("the IKE agent did not stop within 3 s") }
    }
}

/// An answer handed from the agent's thread to a waiting one: written before the semaphore
/// is signalled, read after the wait returns.
final class AnswerBox<T>: @unchecked Sendable { var value: T? }
