import CSluiceCrypto

/// Sluice's version: the one place it is written. `sluice --version`, `sluice stats`, the
/// Prometheus `sluice_build_info` gauge and the .deb's control file (the Makefile reads
/// this line) all take it from here.
public enum SluiceVersion {
    public static let number = "0.2.0"

    /// The OpenSSL library the process runs with, as it names itself.
    public static var openSSL: String { String(cString: sluice_openssl_version()) }

    /// What `sluice --version` prints.
    public static var description: String { "sluice \(number) (\(openSSL))" }
}
