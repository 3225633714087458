// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Sluice",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "sluice", targets: ["sluice"]),
        .library(name: "SluiceCore", targets: ["SluiceCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
    ],
    targets: [
        // libcrypto (OpenSSL EVP) behind a handful of C functions with explicit lengths.
        .target(
            name: "CSluiceCrypto",
            linkerSettings: [.linkedLibrary("crypto")]
        ),
        // libmnl + libnetfilter_queue: netlink message building and parsing only.
        .target(
            name: "CSluiceNetfilter",
            linkerSettings: [.linkedLibrary("mnl"), .linkedLibrary("netfilter_queue")]
        ),
        // Memory shared with worker processes (memfd, MAP_SHARED) and atomics on its words.
        .target(name: "CSluiceShared"),
        // The pure IPsec library: packets, ESP, SAD, SPD, anti-replay. No root; its only
        // system calls make the shared memory its counters live in.
        .target(name: "SluiceCore", dependencies: ["CSluiceCrypto", "CSluiceShared"]),
        // IKEv2 (RFC 7296): messages, crypto, IKE SA state machines. Pure: no sockets, no threads.
        .target(name: "SluiceIKE", dependencies: ["SluiceCore", "CSluiceCrypto"]),
        // Config file reader (a TOML subset that keeps line numbers for errors).
        .target(name: "SluiceConfig", dependencies: ["SluiceCore", "SluiceIKE"]),
        // NFQUEUE workers, nftables redirector, sequence state, control socket.
        .target(
            name: "SluiceDataPlane",
            dependencies: [
                "SluiceCore", "SluiceConfig", "SluiceIKE", "CSluiceNetfilter", "CSluiceShared",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .executableTarget(
            name: "sluice",
            dependencies: [
                "SluiceCore", "SluiceConfig", "SluiceDataPlane", "SluiceIKE",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Benchmarks (not tests): crypto per packet size, the worker loop in process, IKE rekeys.
        .executableTarget(
            name: "sluice-bench",
            dependencies: ["SluiceCore", "SluiceDataPlane", "SluiceConfig", "SluiceIKE"],
            path: "Sources/SluiceBench"
        ),
        .testTarget(name: "SluiceCoreTests", dependencies: ["SluiceCore"]),
        // Test fixtures shared by the test targets (one copy of the X.509 test PKI).
        .target(name: "SluiceTestFixtures", path: "Tests/SluiceTestFixtures"),
        .testTarget(name: "SluiceIKETests", dependencies: ["SluiceIKE", "SluiceCore", "SluiceTestFixtures"]),
        .testTarget(name: "SluiceConfigTests", dependencies: ["SluiceConfig", "SluiceCore", "SluiceIKE"]),
        .testTarget(name: "SluiceDataPlaneTests", dependencies: ["SluiceDataPlane", "SluiceConfig", "SluiceCore", "SluiceTestFixtures"]),
    ]
)
