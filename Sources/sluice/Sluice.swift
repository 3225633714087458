import ArgumentParser
import Foundation
import Logging
import SluiceConfig
import SluiceCore
import SluiceDataPlane

@main
struct Sluice: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "A user-space IPsec (ESP) data plane for Linux, fed by nftables and NFQUEUE.",
        version: SluiceVersion.description,
        subcommands: [Run.self, Check.self, Rules.self, Stats.self, SA.self, ListSAs.self, Initiate.self, Terminate.self, Rekey.self],
        defaultSubcommand: nil)
}

struct ConfigOption: ParsableArguments {
    @Option(name: .shortAndLong, help: "The configuration file.")
    var config: String = "/etc/sluice/sluice.toml"
}

enum BackendChoice: String, ExpressibleByArgument, CaseIterable {
    case auto, native, xtables
    var forced: QueueBackend? { self == .auto ? nil : QueueBackend(rawValue: rawValue) }
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("sluice: error: \(message)\n".utf8))
    exit(1)
}

/// Loads a config, or prints every problem as FILE:LINE: message and exits 1.
func loadConfigOrExit(_ path: String) throws -> SluiceConfiguration {
    do {
        return try ConfigLoader.load(path: path)
    } catch let e as ConfigErrors {
        for i in e.issues { FileHandle.standardError.write(Data("\(i)\n".utf8)) }
        throw ExitCode(1)
    }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the data plane in the foreground (systemd runs it this way).")
    @OptionGroup var options: ConfigOption
    @Option(help: "Queueing backend: auto detects whether the kernel has nft 'queue'.")
    var backend: BackendChoice = .auto

    func run() throws {
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        let logger = Logger(label: "sluice")
        do {
            let daemon = try Daemon(configPath: options.config, logger: logger, backend: backend.forced)
            let code = try daemon.run()
            throw ExitCode(code)
        } catch let e as DaemonError {
            fail(e.description)
        }
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Validate a configuration: prints FILE:LINE: message for every problem.")
    @OptionGroup var options: ConfigOption

    func run() throws {
        let cfg = try loadConfigOrExit(options.config)
        for w in cfg.warnings { print(w) }
        switch Check.kernelCheck(cfg) {
        case .accepted: break
        case let .skipped(why): print("\(options.config): note: the kernel check of the generated nftables ruleset was skipped: \(why)")
        case let .refused(message):
            FileHandle.standardError.write(Data("\(options.config): the generated nftables ruleset is refused by the kernel: \(message)\n".utf8))
            throw ExitCode(1)
        }
        print("\(options.config): OK: \(cfg.associations.count) SA(s), \(cfg.policies.count) polic\(cfg.policies.count == 1 ? "y" : "ies"), \(cfg.queues) queue(s)")
        if let ike = Check.connectionSummary(cfg) { print("\(options.config): \(ike)") }
    }

    /// "IKE: 2 connection(s), 3 child(ren): gw-b (net, net6), gw-c (voip)"; nil without connections.
    static func connectionSummary(_ cfg: SluiceConfiguration) -> String? {
        guard !cfg.connections.isEmpty else { return nil }
        let children = cfg.connections.reduce(0) { $0 + $1.children.count }
        let each = cfg.connections.map { c in "\(c.name) (\(c.children.isEmpty ? "no children" : c.children.map(\.name).joined(separator: ", ")))" }
        return "IKE: \(cfg.connections.count) connection(s), \(children) child(ren): \(each.joined(separator: ", "))"
    }

    enum KernelCheck { case accepted, skipped(String), refused(String) }

    /// Loads the ruleset `sluice run` would install with `nft -c` (which changes nothing)
    /// in a network namespace of its own, so the host's ruleset is neither touched nor
    /// needed. The xtables backend's script (no `queue` statements) loads on every
    /// kernel; the native one is checked as well where the kernel has nft's `queue`.
    static func kernelCheck(_ cfg: SluiceConfiguration) -> KernelCheck {
        guard geteuid() == 0 else { return .skipped("not running as root") }
        guard let nft = Firewall.find("nft") else { return .skipped("nft is not installed") }
        guard Firewall.find("unshare") != nil else { return .skipped("unshare is not installed") }
        // No namespace without CAP_SYS_ADMIN, nor under systemd's RestrictNamespaces=. Asked
        // first, without input: writing the script to an unshare that already failed
        // would end this process with SIGPIPE.
        guard let probe = try? Firewall.run("unshare", ["-n", "true"]) else { return .skipped("unshare could not be run") }
        guard probe.status == 0 else {
            return .skipped("no network namespace of its own (\(probe.error.trimmingCharacters(in: .whitespacesAndNewlines)))")
        }
        var backends: [QueueBackend] = [.xtables]
        if let (detected, _) = try? Firewall.detectBackend(), detected == .native { backends.append(.native) }
        for backend in backends {
            let script = RulesetBuilder(config: cfg, backend: backend).nftScript()
            // nft's errors on stdout: one pipe to drain, however many rules it refuses.
            guard let r = try? Firewall.run("unshare", ["-n", "sh", "-c", "exec \(nft) -c -f - 2>&1"], input: script) else {
                return .skipped("unshare could not be run")
            }
            guard r.status != 0 else { continue }
            let message = (r.output + r.error).trimmingCharacters(in: .whitespacesAndNewlines)
            return .refused(message.isEmpty ? "nft -c exited with status \(r.status)" : message)
        }
        return .accepted
    }
}

struct Rules: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the nftables ruleset Sluice would install.")
    @OptionGroup var options: ConfigOption
    @Option(help: "Backend to print for (auto asks the kernel; falls back to native when it cannot).")
    var backend: BackendChoice = .auto

    func run() throws {
        let cfg = try loadConfigOrExit(options.config)
        var b = backend.forced ?? .native
        if backend == .auto, let (detected, _) = try? Firewall.detectBackend() { b = detected }
        print(RulesetBuilder(config: cfg, backend: b).describe(), terminator: "")
    }
}

struct SocketOptions: ParsableArguments {
    @Option(help: "The daemon's control socket (default: control_socket from --config, else /run/sluice/control.sock).")
    var socket: String?
    @Option(name: .shortAndLong, help: "Read control_socket from this configuration.")
    var config: String?

    func resolve() -> String {
        if let socket { return socket }
        if let config, let cfg = try? ConfigLoader.load(path: config) { return cfg.controlSocket }
        return ConfigLoader.defaultControlSocket
    }
}

struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show per-queue and per-SA counters, drops by reason, and the kernel's queue state.")
    @OptionGroup var socketOptions: SocketOptions
    @Flag(help: "Print one JSON document.") var json = false
    @Flag(help: "Refresh in place until q or Ctrl-C.") var watch = false
    @Option(help: "Seconds between refreshes with --watch.") var interval: Double = 1

    func validate() throws {
        guard interval >= 0.1 && interval <= 3600 else { throw ValidationError("--interval must be between 0.1 and 3600 seconds") }
        if json && watch { throw ValidationError("--json and --watch do not go together") }
    }

    func run() throws {
        let path = socketOptions.resolve()
        if watch {
            StatsView.watch(socket: path, interval: interval)
            return
        }
        switch StatsView.fetch(socket: path) {
        case let .success(snap):
            if json {
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try enc.encode(snap), as: UTF8.self))
            } else {
                print(StatsView.render(snap, previous: nil), terminator: "")
            }
        case let .failure(why):
            if json {
                let doc: [String: Any] = ["version": 1, "daemon": NSNull(), "error": "\(why)",
                                          "kernel": (try? JSONSerialization.jsonObject(with: JSONEncoder().encode(KernelQueue.read()))) ?? []]
                print(String(decoding: try JSONSerialization.data(withJSONObject: doc, options: [.prettyPrinted, .sortedKeys]), as: UTF8.self))
            } else {
                print(StatsView.renderDown(socket: path, why: why), terminator: "")
            }
            throw ExitCode(3)
        }
    }
}

struct SA: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "sa", abstract: "Security associations.", subcommands: [List.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List SAs with SPI, peer, proposal, mode, sequence and lifetime (never keys).")
        @OptionGroup var socketOptions: SocketOptions
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            switch StatsView.fetch(socket: socketOptions.resolve()) {
            case let .success(snap):
                if json {
                    let enc = JSONEncoder()
                    enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                    print(String(decoding: try enc.encode(snap.associations), as: UTF8.self))
                } else {
                    print(StatsView.renderSAs(snap.associations, previous: nil, seconds: 0), terminator: "")
                }
            case let .failure(why):
                fail("daemon not reachable at \(socketOptions.resolve()): \(why)")
            }
        }
    }
}
