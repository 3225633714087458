import Foundation
import Logging
import Synchronization

/// Runs nft and iptables-nft. All rule changes go through here.
public struct Firewall: Sendable {
    public struct CommandResult: Sendable { public let status: Int32; public let output: String; public let error: String }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    static let searchPath = ["/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin"]

    /// `SLUICE_NFT` names another nft binary (tests use it to make a transaction fail).
    public static func find(_ tool: String) -> String? {
        if tool == "nft", let forced = ProcessInfo.processInfo.environment["SLUICE_NFT"], !forced.isEmpty {
            return FileManager.default.isExecutableFile(atPath: forced) ? forced : nil
        }
        return searchPath.map { "\($0)/\(tool)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Runs a tool to completion. Input is written, and stdout and stderr are read, at the
    /// same time: a tool that exits without reading its input (EPIPE, a counted failure
    /// here, never a crash) or writes a lot to both streams cannot stall or kill us.
    public static func run(_ tool: String, _ args: [String], input: String? = nil) throws -> CommandResult {
        guard let exe = find(tool) else { throw Failure(description: "\(tool) is not installed (looked in \(searchPath.joined(separator: ":")))") }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        let out = Pipe(), err = Pipe(), inp = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = inp
        try p.run()
        let done = DispatchGroup()
        let collected = Mutex<(Data, Data)>((Data(), Data()))
        DispatchQueue.global().async(group: done) {
            if let input { try? inp.fileHandleForWriting.write(contentsOf: Data(input.utf8)) }
            try? inp.fileHandleForWriting.close()
        }
        DispatchQueue.global().async(group: done) {
            let e = err.fileHandleForReading.readDataToEndOfFile()
            collected.withLock { $0.1 = e }
        }
        let o = out.fileHandleForReading.readDataToEndOfFile()
        done.wait()
        p.waitUntilExit()
        let e = collected.withLock { $0.1 }
        return CommandResult(status: p.terminationStatus, output: String(decoding: o, as: UTF8.self),
                             error: String(decoding: e, as: UTF8.self))
    }

    /// Asks the kernel (through `nft -c`, which changes nothing) whether the native
    /// `queue` statement exists. Kernels without nft_queue answer ENOENT.
    public static func detectBackend() throws -> (QueueBackend, String) {
        let probe = """
            table inet sluice_probe {
                chain c {
                    type filter hook prerouting priority 0; policy accept;
                    queue num 0
                }
            }

            """
        let r = try run("nft", ["-c", "-f", "-"], input: probe)
        if r.status == 0 { return (.native, "nft queue statement available") }
        if r.error.contains("No such file or directory") {
            guard find("iptables-nft") != nil, find("ip6tables-nft") != nil else {
                throw Failure(description: "this kernel lacks the nft queue expression and iptables-nft is not installed for the xt NFQUEUE fallback (apt-get install iptables)")
            }
            return (.xtables, "kernel lacks nft 'queue' (nft_queue): using the xt NFQUEUE target through iptables-nft")
        }
        throw Failure(description: "nft cannot check rules: \(r.error.trimmingCharacters(in: .whitespacesAndNewlines))")
    }

    /// Tables iptables-nft had to create for our xt rules: removed again on stop if empty.
    public struct Created: Sendable {
        var tables: [(family: String, table: String)] = []
        public init() {}
    }

    static func family(_ tool: String) -> String { tool.hasPrefix("ip6") ? "ip6" : "ip" }

    /// Installs (or atomically replaces) table inet sluice, plus the xt rules if needed.
    /// A reload leaves the xt rules alone: they depend only on settings that need a restart
    /// (queues, queue_base, mark_shift, fail, gso), and checking each one costs a process
    /// (about 2.5 s in all); if someone removed them, the guard chains keep it fail-closed.
    @discardableResult
    public static func install(_ b: RulesetBuilder, reload: Bool = false) throws -> Created {
        var created = Created()
        if b.backend == .xtables && !reload {
            for r in b.xtRules() where !created.tables.contains(where: { $0.family == family(r.tool) && $0.table == r.table }) {
                let exists = try run("nft", ["list", "table", family(r.tool), r.table])
                if exists.status != 0 { created.tables.append((family(r.tool), r.table)) }
            }
            // The xt rules first: they match only marks the nft table has yet to set.
            for r in b.xtRules() {
                let exists = try run(r.tool, ["-w", "-t", r.table, "-C", r.chain] + r.spec)
                if exists.status == 0 { continue }
                let add = try run(r.tool, ["-w", "-t", r.table, "-A", r.chain] + r.spec)
                guard add.status == 0 else {
                    throw Failure(description: "\(r.tool) -t \(r.table) -A \(r.chain) failed: \(add.error.trimmingCharacters(in: .whitespacesAndNewlines))")
                }
            }
        }
        let r = try run("nft", ["-f", "-"], input: b.nftScript(reload: reload))
        guard r.status == 0 else {
            throw Failure(description: "nft refused the ruleset: \(r.error.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return created
    }

    /// Removes exactly what `install` added; other tables and rules stay untouched.
    public static func remove(_ b: RulesetBuilder, created: Created = Created(), logger: Logger? = nil) {
        let r = try? run("nft", ["delete", "table", "inet", RulesetBuilder.tableName])
        if let r, r.status != 0, !r.error.contains("No such file") {
            logger?.warning("could not delete table inet sluice: \(r.error)")
        }
        for x in b.xtRules() {
            // Delete every copy (a crashed run may have left one).
            for _ in 0..<8 {
                guard let d = try? run(x.tool, ["-w", "-t", x.table, "-D", x.chain] + x.spec), d.status == 0 else { break }
            }
        }
        // A table iptables-nft created only for us goes too, if nothing else moved in.
        for t in created.tables {
            guard let list = try? run("nft", ["list", "table", t.family, t.table]), list.status == 0 else { continue }
            let hasRules = list.output.split(separator: "\n").contains { line in
                let l = line.trimmingCharacters(in: .whitespaces)
                return !(l.isEmpty || l.hasPrefix("table ") || l.hasPrefix("chain ") || l.hasPrefix("type ") || l == "}" || l.hasPrefix("#"))
            }
            if !hasRules { _ = try? run("nft", ["delete", "table", t.family, t.table]) }
        }
    }
}
