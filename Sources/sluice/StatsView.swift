import Foundation
import SluiceCore
import SluiceDataPlane

/// Text rendering of stats for terminals, and the --watch loop.
enum StatsView {
    struct Failure: Error, CustomStringConvertible { let description: String }

    static func fetch(socket: String) -> Result<StatsSnapshot, Failure> {
        do {
            let data = try ControlClient.request(path: socket, command: "stats")
            if let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let err = obj["error"] as? String {
                return .failure(Failure(description: err))
            }
            return .success(try JSONDecoder().decode(StatsSnapshot.self, from: data))
        } catch let e as Errno {
            return .failure(Failure(description: e.code == ENOENT || e.code == ECONNREFUSED ? "the daemon is not running (\(e))" : "\(e)"))
        } catch {
            return .failure(Failure(description: "\(error)"))
        }
    }

    static func human(_ v: UInt64) -> String {
        let d = Double(v)
        if d >= 1e9 { return String(format: "%.1fG", d / 1e9) }
        if d >= 1e6 { return String(format: "%.1fM", d / 1e6) }
        if d >= 1e4 { return String(format: "%.1fk", d / 1e3) }
        return String(v)
    }

    static func rate(_ now: UInt64, _ before: UInt64?, _ seconds: Double) -> String {
        guard let before, seconds > 0, now >= before else { return "-" }
        return human(UInt64(Double(now - before) / seconds)) + "/s"
    }

    static func table(_ header: [String], _ rows: [[String]]) -> String {
        var widths = header.map(\.count)
        for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in
                i == 0 ? c.padding(toLength: widths[i], withPad: " ", startingAt: 0) : String(repeating: " ", count: widths[i] - c.count) + c
            }.joined(separator: "  ")
        }
        return ([line(header)] + rows.map(line)).joined(separator: "\n") + "\n"
    }

    static func render(_ s: StatsSnapshot, previous p: StatsSnapshot?) -> String {
        let dt = p.map { s.taken - $0.taken } ?? 0
        var out = "sluice \(s.daemon.version ?? "?") pid \(s.daemon.pid), up \(Int(s.daemon.uptimeSeconds))s, backend \(s.daemon.backend), fail \(s.daemon.failMode)"
        out += s.daemon.passthrough ? ", PASSTHROUGH" : ""
        if let o = s.daemon.openssl { out += ", \(o)" }
        out += "\n\nQueues\n"
        let qrows = s.queues.map { q -> [String] in
            let pq = p?.queues.first { $0.queue == q.queue }
            let avgBatch = q.batches > 0 ? String(format: "%.1f", Double(q.received) / Double(q.batches)) : "-"
            return [String(q.queue), human(q.received), rate(q.received, pq?.received, dt), human(q.sealed), human(q.opened),
                    human(q.dropped), human(q.bytesIn), avgBatch, "\(q.latencyP50Nanos / 1000)/\(q.latencyP99Nanos / 1000)",
                    "\(human(q.wholePackets ?? 0))/\(human(q.segments ?? 0))", human(q.coalesced ?? 0),
                    String(q.receiveOverruns), String(q.verdictErrors)]
        }
        out += table(["queue", "packets", "rate", "sealed", "opened", "dropped", "bytes", "batch", "p50/p99us",
                      "gso-in/esp-out", "merged", "overruns", "verdict-err"], qrows)
        out += "\nSecurity associations\n" + renderSAs(s.associations, previous: p?.associations, seconds: dt)
        if let ike = s.ikeSAs {
            out += "\nIKE SAs\n"
            out += ike.isEmpty ? "  (none)\n" : ike.map { ListSAs.render($0) }.joined()
        }
        if let c = s.ikeCounters {
            out += "  IKE messages: \(c.received) in, \(c.sent) out, \(c.retransmits) retransmitted; dropped: \(c.malformed) malformed, "
            out += "\(c.unknownSPI) unknown SPI, \(c.integrityFailures) integrity, \(c.unexpected) unexpected; \(c.authFailures) authentication failures, "
            out += "\(c.peersDead) dead peers, \(c.cookiesSent) cookies sent\n"
            out += "  rekey collisions settled: \(c.rekeyCollisions)\n"
            // With an ESP-in-UDP SA in, the workers see port 4500 first and consume keepalives there.
            let consumed = s.drops[DropReason.natKeepalive.rawValue] ?? 0
            out += "  NAT keepalives: \(c.keepalivesSent) sent, \(c.keepalivesReceived + consumed) received\n"
            out += "  IKE fragments: \(c.fragmentsSent) sent, \(c.fragmentsReceived) received, \(c.fragmentedMessages) messages reassembled, \(c.fragmentsDropped) dropped\n"
        }
        out += "\nDrops by reason\n"
        if s.drops.isEmpty { out += "  (none)\n" } else {
            out += table(["reason", "packets"], s.drops.sorted { $0.key < $1.key }.map { [$0.key, String($0.value)] })
        }
        out += "\n" + renderKernel(s.kernel)
        return out
    }

    static func renderSAs(_ sas: [StatsSnapshot.SAStats], previous: [StatsSnapshot.SAStats]?, seconds: Double) -> String {
        if sas.isEmpty { return "  (none)\n" }
        let rows = sas.map { a -> [String] in
            let pa = previous?.first { $0.name == a.name }
            var life = "-"
            if let h = a.hardPackets { life = "\(human(a.packets))/\(human(h))pkt" }
            if let h = a.hardBytes { life = "\(human(a.bytes))/\(human(h))B" }
            if let h = a.hardSeconds { life = "\(a.ageSeconds)/\(h)s" }
            if a.expired { life += " EXPIRED" }
            return [a.name, a.direction, a.spi, a.direction == "out" ? a.remote : a.local, a.proposal + (a.esn ? "+esn" : ""), a.mode,
                    String(a.sequence), human(a.packets), rate(a.packets, pa?.packets, seconds), human(a.bytes),
                    String(a.replayDrops), String(a.icvFailures), life]
        }
        return table(["sa", "dir", "spi", "peer/local", "proposal", "mode", "seq", "packets", "rate", "bytes", "replay", "icv-fail", "lifetime"], rows)
    }

    static func renderKernel(_ k: [KernelQueue]) -> String {
        var out = "Kernel queues (\(KernelQueue.procPath))\n"
        if k.isEmpty { return out + "  (no queue is bound in this network namespace)\n" }
        out += table(["queue", "portid", "waiting", "copy", "range", "queue-full", "user-drop", "last-id"],
                     k.map { [String($0.queue), String($0.portID), String($0.waiting), $0.copyMode == 2 ? "packet" : String($0.copyMode),
                              String($0.copyRange), String($0.queueDropped), String($0.userDropped), String($0.idSequence)] })
        return out
    }

    static func renderDown(socket: String, why: Failure) -> String {
        "sluice daemon is DOWN: no answer on \(socket): \(why)\n\n" + renderKernel(KernelQueue.read())
    }

    /// Redraws like top(1) until q or Ctrl-C; restores the terminal on the way out.
    static func watch(socket: String, interval: Double) {
        let tty = isatty(0) == 1
        var saved = termios()
        if tty {
            tcgetattr(0, &saved)
            var raw = saved
            raw.c_lflag &= ~tcflag_t(ICANON | ECHO)
            tcsetattr(0, TCSANOW, &raw)
        }
        signal(SIGINT, SIG_IGN) // Ctrl-C arrives as a byte (ISIG stays on, so read it via the handler below)
        signal(SIGINT) { _ in
            var t = termios()
            tcgetattr(0, &t)
            t.c_lflag |= tcflag_t(ICANON | ECHO)
            tcsetattr(0, TCSANOW, &t)
            print("\u{1B}[?25h")
            exit(0)
        }
        defer { if tty { tcsetattr(0, TCSANOW, &saved) }; print("\u{1B}[?25h", terminator: "") }
        print("\u{1B}[?25l", terminator: "")
        var previous: StatsSnapshot? = nil
        while true {
            var screen = "\u{1B}[H\u{1B}[2J"
            switch fetch(socket: socket) {
            case let .success(s):
                screen += render(s, previous: previous)
                previous = s
            case let .failure(why):
                screen += renderDown(socket: socket, why: why)
                previous = nil
            }
            screen += "\nrefresh \(interval)s — press q to quit\n"
            FileHandle.standardOutput.write(Data(screen.utf8))
            var pfd = pollfd(fd: 0, events: Int16(POLLIN), revents: 0)
            let deadline = Date().addingTimeInterval(interval)
            while Date() < deadline {
                let ms = Int32(max(1, deadline.timeIntervalSinceNow * 1000))
                if poll(&pfd, 1, ms) > 0 {
                    var c: UInt8 = 0
                    if read(0, &c, 1) <= 0 { return }
                    if c == UInt8(ascii: "q") || c == UInt8(ascii: "Q") || c == 3 { return }
                }
            }
        }
    }
}
