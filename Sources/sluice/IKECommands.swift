import ArgumentParser
import Foundation
import SluiceDataPlane
import SluiceIKE

/// `sluice list-sas | initiate | terminate | rekey`: the IKE agent of the running daemon,
/// over the control socket (swanctl's --list-sas, --initiate, --terminate, --rekey).

struct SAHandle: ParsableArguments {
    @Option(help: "A CHILD_SA by its child name.") var child: String?
    @Option(help: "An IKE SA by its connection name.") var ike: String?

    func validate() throws {
        guard (child == nil) != (ike == nil) else { throw ValidationError("give exactly one of --child NAME or --ike NAME") }
    }

    var arguments: [String: String] { child.map { ["child": $0] } ?? ["ike": ike ?? ""] }
    var name: String { child.map { "CHILD_SA \($0)" } ?? "IKE SA \(ike ?? "")" }

    /// One request for this SA; the daemon's refusal exits 1 with its message.
    func send(_ command: String, _ socket: SocketOptions, saying verb: String, then tail: String = "") {
        _ = controlRequest(socket.resolve(), command, arguments)
        print("\(verb) \(name)\(tail)")
    }
}

/// Sends one request; prints the daemon's error and exits 1 when it refuses.
func controlRequest(_ socket: String, _ command: String, _ arguments: [String: String] = [:], timeout: Int = 5) -> [String: Any] {
    let data: Data
    do { data = try ControlClient.request(path: socket, command: command, arguments: arguments, timeoutSeconds: timeout) } catch {
        fail("daemon not reachable at \(socket): \(error)")
    }
    guard let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { fail("malformed answer from the daemon") }
    if let e = obj["error"] as? String { fail(e) }
    return obj
}

struct Initiate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Negotiate a CHILD_SA (and its IKE SA if needed) or an IKE SA now.")
    @OptionGroup var socketOptions: SocketOptions
    @OptionGroup var handle: SAHandle
    func run() throws { handle.send("initiate", socketOptions, saying: "initiating", then: "; see `sluice list-sas` and the daemon's log") }
}

struct Terminate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Delete a CHILD_SA or an IKE SA (with its CHILD_SAs), telling the peer.")
    @OptionGroup var socketOptions: SocketOptions
    @OptionGroup var handle: SAHandle
    func run() throws { handle.send("terminate", socketOptions, saying: "terminating") }
}

struct Rekey: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Rekey a CHILD_SA or an IKE SA now (make-before-break).")
    @OptionGroup var socketOptions: SocketOptions
    @OptionGroup var handle: SAHandle
    func run() throws { handle.send("rekey", socketOptions, saying: "rekeying") }
}

struct ListSAs: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list-sas", abstract: "List IKE SAs and their CHILD_SAs (SPIs, algorithms, selectors, traffic; never keys).")
    @OptionGroup var socketOptions: SocketOptions
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let obj = controlRequest(socketOptions.resolve(), "list-sas")
        let raw = obj["ike_sas"] ?? []
        if json {
            print(String(decoding: try JSONSerialization.data(withJSONObject: raw, options: [.prettyPrinted, .sortedKeys]), as: UTF8.self))
            return
        }
        guard let list = try? JSONDecoder().decode([IKESAStatus].self, from: JSONSerialization.data(withJSONObject: raw)) else {
            fail("malformed list-sas answer from the daemon")
        }
        if list.isEmpty { print("no IKE SAs") }
        for s in list { print(Self.render(s), terminator: "") }
    }

    /// swanctl --list-sas's layout, one IKE SA with its CHILD_SAs.
    static func render(_ s: IKESAStatus) -> String {
        func algs(_ e: String?, _ k: Int?, _ rest: [String?]) -> String {
            ([e.map { "\($0)\(k.map { "-\($0)" } ?? "")" }] + rest).compactMap { $0 }.joined(separator: "/")
        }
        let mark = { (role: String) in s.role == role ? "*" : "" }
        var out = "\(s.connection): #\(s.spiI)_i\(mark("initiator")) \(s.spiR)_r\(mark("responder")), \(s.state), \(s.local)[\(s.localID)] - \(s.remote)[\(s.remoteID)]\n"
        out += "  \(algs(s.encryption, s.encryptionKeySize, [s.integrity, s.prf, s.dhGroup]))\(s.encapsulated ? ", UDP-encapsulated" : "")"
        if let e = s.establishedSeconds { out += ", established \(e)s ago" }
        if let r = s.rekeyInSeconds { out += ", rekeying in \(r)s" }
        out += "\n"
        for c in s.children {
            out += "  \(c.name): \(c.state), \(c.mode), ESP\(s.encapsulated ? " in UDP" : "") SPIs: \(c.spiIn)_i \(c.spiOut)_o, \(algs(c.encryption, c.encryptionKeySize, [c.integrity, c.dhGroup]))\(c.esn ? "/ESN" : "")\n"
            out += "    in  \(c.bytesIn) bytes, \(c.packetsIn) packets; out \(c.bytesOut) bytes, \(c.packetsOut) packets; installed \(c.installedSeconds)s ago\(c.rekeyInSeconds.map { ", rekeying in \($0)s" } ?? "")\n"
            out += "    local  \(c.localTS.joined(separator: " "))\n"
            out += "    remote \(c.remoteTS.joined(separator: " "))\n"
        }
        return out
    }
}
