#if canImport(Glibc)
import Glibc
#endif

// The few system facts the data plane shares: an errno that prints, and the clock.

/// A failed system call's errno, printed as the C library names it.
public struct Errno: Error, Equatable, CustomStringConvertible {
    public let code: Int32
    public init(_ code: Int32) { self.code = code }
    public var description: String { "\(String(cString: strerror(code))) (errno \(code))" }
}

/// Monotonic nanoseconds.
@inline(__always)
public func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

