import ArgumentParser
import Foundation
import SluiceDataPlane

/// `sluice list-sas | initiate | terminate | rekey`: the IKE agent of the running daemon,
/// over the control socket (swanctl's --list-sas, --initiate, --terminate, --rekey).

struct SAHandle: ParsableArguments {
    @Option(help: "A CHILD_SA by its child name.") var child: String?
    @Option(help: "An IKE SA by its connection name.") var ike: String?

    func validate() throws {
        guard (child == nil) != (ike == nil) else { throw ValidationError("give exactly one of --child NAME or --ike NAME") }
    }

    var arguments: [String: String] { child.map { ["child": $0] } ?? ["ike": ike ?? ""] }
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
    func run() throws {
        _ = controlRequest(socketOptions.resolve(), "initiate", handle.arguments)
        print("initiating \(handle.child.map { "CHILD_SA \($0)" } ?? "IKE SA \(handle.ike ?? "")"); see `sluice list-sas` and the daemon's log")
    }
}

struct Terminate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Delete a CHILD_SA or an IKE SA (with its CHILD_SAs), telling the peer.")
    @OptionGroup var socketOptions: SocketOptions
    @OptionGroup var handle: SAHandle
    func run() throws {
        _ = controlRequest(socketOptions.resolve(), "terminate", handle.arguments)
        print("terminating \(handle.child.map { "CHILD_SA \($0)" } ?? "IKE SA \(handle.ike ?? "")")")
    }
}

struct Rekey: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Rekey a CHILD_SA now (make-before-break).")
    @OptionGroup var socketOptions: SocketOptions
    @OptionGroup var handle: SAHandle
    func run() throws {
        _ = controlRequest(socketOptions.resolve(), "rekey", handle.arguments)
        print("rekeying \(handle.child.map { "CHILD_SA \($0)" } ?? "IKE SA \(handle.ike ?? "")")")
    }
}

struct ListSAs: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list-sas", abstract: "List IKE SAs and their CHILD_SAs (SPIs, algorithms, selectors, traffic; never keys).")
    @OptionGroup var socketOptions: SocketOptions
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let obj = controlRequest(socketOptions.resolve(), "list-sas")
        let list = obj["ike_sas"] as? [[String: Any]] ?? []
        if json {
            print(String(decoding: try JSONSerialization.data(withJSONObject: list, options: [.prettyPrinted, .sortedKeys]), as: UTF8.self))
            return
        }
        if list.isEmpty { print("no IKE SAs") }
        for s in list { print(Self.render(s), terminator: "") }
    }

    static func render(_ s: [String: Any]) -> String {
        func v(_ d: [String: Any], _ k: String) -> String { d[k].map { "\($0)" } ?? "-" }
        var out = "\(v(s, "connection")): #\(v(s, "spiI"))_i\(s["role"] as? String == "initiator" ? "*" : "") \(v(s, "spiR"))_r\(s["role"] as? String == "responder" ? "*" : ""), \(v(s, "state")), \(v(s, "local"))[\(v(s, "localID"))] - \(v(s, "remote"))[\(v(s, "remoteID"))]\n"
        var algs = "\(v(s, "encryption"))-\(v(s, "encryptionKeySize"))"
        if let i = s["integrity"] as? String { algs += "/\(i)" }
        algs += "/\(v(s, "prf"))/\(v(s, "dhGroup"))"
        out += "  \(algs)\(s["encapsulated"] as? Bool == true ? ", UDP-encapsulated" : "")"
        if let e = s["establishedSeconds"] { out += ", established \(e)s ago" }
        if let r = s["rekeyInSeconds"] { out += ", rekeying in \(r)s" }
        out += "\n"
        for c in s["children"] as? [[String: Any]] ?? [] {
            var ca = "\(v(c, "encryption"))-\(v(c, "encryptionKeySize"))"
            if let i = c["integrity"] as? String { ca += "/\(i)" }
            out += "  \(v(c, "name")): \(v(c, "state")), \(v(c, "mode")), ESP SPIs: \(v(c, "spiIn"))_i \(v(c, "spiOut"))_o, \(ca)\n"
            out += "    in  \(v(c, "bytesIn")) bytes, \(v(c, "packetsIn")) packets; out \(v(c, "bytesOut")) bytes, \(v(c, "packetsOut")) packets; installed \(v(c, "installedSeconds"))s ago\(c["rekeyInSeconds"].map { ", rekeying in \($0)s" } ?? "")\n"
            out += "    local  \((c["localTS"] as? [String] ?? []).joined(separator: " "))\n"
            out += "    remote \((c["remoteTS"] as? [String] ?? []).joined(separator: " "))\n"
        }
        return out
    }
}
