/// A small TOML reader for Sluice's config: tables, arrays of tables, strings, integers
/// (decimal, hex, octal, binary, with underscores), decimal floats, booleans and one-line
/// arrays. Table names may be dotted (`[[connection.child]]`) but stay flat names: the
/// config's validator decides what a child belongs to.
/// Unlike a general TOML library it keeps the line of every key, so every config error
/// can name `FILE:LINE`. Anything outside that subset is an error, never a guess.
public enum TOMLValue: Equatable, Sendable {
    case string(String)
    case integer(Int64)
    /// Decimal only (`1.8`, `4e0`, `-0.5E-3`); TOML's inf and nan are refused.
    case float(Double)
    case boolean(Bool)
    case array([TOMLValue])

    public var typeName: String {
        switch self {
        case .string: return "a string"
        case .integer: return "an integer"
        case .float: return "a float"
        case .boolean: return "a boolean"
        case .array: return "an array"
        }
    }
}

/// A key's value and the line it was written on.
public struct TOMLEntry: Sendable {
    public let value: TOMLValue
    public let line: Int
}

/// One `[name]` or `[[name]]` table with its keys in file order.
public struct TOMLTable: Sendable {
    public let name: String
    public let line: Int
    public private(set) var keys: [String] = []
    public private(set) var entries: [String: TOMLEntry] = [:]

    init(name: String, line: Int) { self.name = name; self.line = line }

    mutating func set(_ key: String, _ entry: TOMLEntry) -> Bool {
        if entries[key] != nil { return false }
        keys.append(key)
        entries[key] = entry
        return true
    }

    public subscript(_ key: String) -> TOMLEntry? { entries[key] }
}

public struct TOMLDocument: Sendable {
    /// Keys before any header.
    public var root: TOMLTable
    /// `[name]` tables.
    public var tables: [String: TOMLTable] = [:]
    /// `[[name]]` tables, in order.
    public var arrays: [String: [TOMLTable]] = [:]
}

public struct TOMLError: Error, Equatable, CustomStringConvertible {
    public let line: Int
    public let message: String
    public var description: String { "line \(line): \(message)" }
}

public enum TOMLParser {
    public static func parse(_ text: String) throws(TOMLError) -> TOMLDocument {
        var doc = TOMLDocument(root: TOMLTable(name: "", line: 0))
        enum Target { case root, table(String), array(String) }
        var target = Target.root
        var lineNo = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNo += 1
            var s = Scanner(line: Array(rawLine.utf8), number: lineNo)
            s.skipSpace()
            if s.atEndOrComment { continue }
            if s.peek == UInt8(ascii: "[") {
                let isArray = s.peek(at: 1) == UInt8(ascii: "[")
                s.advance(isArray ? 2 : 1)
                s.skipSpace()
                let name = try s.tableName()
                s.skipSpace()
                guard s.consume("]"), !isArray || s.consume("]") else {
                    throw TOMLError(line: lineNo, message: "expected '\(isArray ? "]]" : "]")' after table name \"\(name)\"")
                }
                try s.expectEnd()
                if isArray {
                    if doc.tables[name] != nil { throw TOMLError(line: lineNo, message: "[[\(name)]] clashes with [\(name)] defined earlier") }
                    doc.arrays[name, default: []].append(TOMLTable(name: name, line: lineNo))
                    target = .array(name)
                } else {
                    if doc.arrays[name] != nil {
                        throw TOMLError(line: lineNo, message: "[\(name)] clashes with [[\(name)]] defined earlier (write [[\(name)]] for one more)")
                    }
                    if doc.tables[name] != nil { throw TOMLError(line: lineNo, message: "table [\(name)] is defined twice") }
                    doc.tables[name] = TOMLTable(name: name, line: lineNo)
                    target = .table(name)
                }
                continue
            }
            let key = try s.key()
            s.skipSpace()
            guard s.consume("=") else { throw TOMLError(line: lineNo, message: "expected '=' after key \"\(key)\"") }
            s.skipSpace()
            let value = try s.value()
            try s.expectEnd()
            let entry = TOMLEntry(value: value, line: lineNo)
            let fresh: Bool
            switch target {
            case .root: fresh = doc.root.set(key, entry)
            case let .table(n): fresh = doc.tables[n]!.set(key, entry)
            case let .array(n):
                var list = doc.arrays[n]!
                fresh = list[list.count - 1].set(key, entry)
                doc.arrays[n] = list
            }
            if !fresh { throw TOMLError(line: lineNo, message: "key \"\(key)\" is set twice in the same table") }
        }
        return doc
    }

    struct Scanner {
        let line: [UInt8]
        let number: Int
        var i = 0

        init(line: [UInt8], number: Int) {
            var l = line
            if l.last == UInt8(ascii: "\r") { l.removeLast() }
            self.line = l
            self.number = number
        }

        var peek: UInt8? { i < line.count ? line[i] : nil }
        func peek(at k: Int) -> UInt8? { i + k < line.count ? line[i + k] : nil }
        mutating func advance(_ n: Int = 1) { i += n }
        var atEndOrComment: Bool { peek == nil || peek == UInt8(ascii: "#") }

        mutating func skipSpace() {
            while let c = peek, c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") { i += 1 }
        }

        mutating func consume(_ ch: Character) -> Bool {
            if peek == ch.asciiValue { i += 1; return true }
            return false
        }

        func fail(_ m: String) -> TOMLError { TOMLError(line: number, message: m) }

        mutating func expectEnd() throws(TOMLError) {
            skipSpace()
            guard atEndOrComment else {
                throw fail("unexpected text \"\(String(decoding: line[i...], as: UTF8.self))\" at the end of the line")
            }
        }

        static func isBare(_ c: UInt8) -> Bool {
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == UInt8(ascii: "_") || c == UInt8(ascii: "-")
        }

        /// A key on the left of `=`: one part, never dotted.
        mutating func key() throws(TOMLError) -> String {
            let k = try keyPart()
            if peek == UInt8(ascii: ".") { throw fail("dotted keys are not supported; use a [table] header") }
            return k
        }

        /// A header's name: parts joined by '.', spaces around the dots allowed ("a . b" is "a.b").
        mutating func tableName() throws(TOMLError) -> String {
            var parts = [try keyPart()]
            while true {
                skipSpace()
                guard consume(".") else { break }
                skipSpace()
                parts.append(try keyPart())
            }
            return parts.joined(separator: ".")
        }

        mutating func keyPart() throws(TOMLError) -> String {
            if peek == UInt8(ascii: "\"") { return try basicString() }
            let start = i
            while let c = peek, Scanner.isBare(c) { i += 1 }
            guard i > start else {
                throw fail(peek == nil ? "expected a key" : "expected a key, found \"\(Character(UnicodeScalar(line[i])))\"")
            }
            return String(decoding: line[start..<i], as: UTF8.self)
        }

        mutating func value() throws(TOMLError) -> TOMLValue {
            guard let c = peek else { throw fail("missing value after '='") }
            switch c {
            case UInt8(ascii: "\""):
                if peek(at: 1) == UInt8(ascii: "\""), peek(at: 2) == UInt8(ascii: "\"") { throw fail("multi-line strings are not supported") }
                return .string(try basicString())
            case UInt8(ascii: "'"):
                return .string(try literalString())
            case UInt8(ascii: "["):
                i += 1
                var items: [TOMLValue] = []
                while true {
                    skipSpace()
                    if consume("]") { break }
                    if peek == nil { throw fail("arrays must close on the same line (missing ']')") }
                    items.append(try value())
                    skipSpace()
                    if consume(",") { continue }
                    if consume("]") { break }
                    throw fail("expected ',' or ']' in array")
                }
                return .array(items)
            case UInt8(ascii: "{"):
                throw fail("inline tables are not supported; use a [table] header")
            default:
                let start = i
                while let c = peek, c != UInt8(ascii: ","), c != UInt8(ascii: "]"), c != UInt8(ascii: "#"),
                      c != UInt8(ascii: " "), c != UInt8(ascii: "\t") { i += 1 }
                let word = String(decoding: line[start..<i], as: UTF8.self)
                if word == "true" { return .boolean(true) }
                if word == "false" { return .boolean(false) }
                if let n = Scanner.integer(word) { return .integer(n) }
                if let x = Scanner.float(word) {
                    guard x.isFinite else { throw fail("\(word) is too large for a float") }
                    return .float(x)
                }
                throw fail("\"\(word)\" is not a value (strings need quotes)")
            }
        }

        static func integer(_ word: String) -> Int64? {
            var w = Substring(word)
            var negative = false
            if w.hasPrefix("+") { w = w.dropFirst() } else if w.hasPrefix("-") { negative = true; w = w.dropFirst() }
            if w.hasPrefix("_") || w.hasSuffix("_") || w.contains("__") { return nil }
            var radix = 10
            if w.hasPrefix("0x") { radix = 16; w = w.dropFirst(2) }
            else if w.hasPrefix("0o") { radix = 8; w = w.dropFirst(2) }
            else if w.hasPrefix("0b") { radix = 2; w = w.dropFirst(2) }
            else if w.count > 1 && w.hasPrefix("0") { return nil } // TOML forbids leading zeros
            let digits = String(w.filter { $0 != "_" })
            guard !digits.isEmpty, let v = UInt64(digits, radix: radix) else { return nil }
            if negative { return v <= UInt64(Int64.max) + 1 ? Int64(truncatingIfNeeded: 0 &- v) : nil }
            return v <= UInt64(Int64.max) ? Int64(v) : nil
        }

        /// TOML's decimal float: an integer part without leading zeros, then a fraction,
        /// an exponent or both; underscores only between digits.
        static func float(_ word: String) -> Double? {
            var rest = Substring(word)
            func digits(allowLeadingZero: Bool) -> String? {
                let run = rest.prefix { $0.isASCII && ($0.isNumber || $0 == "_") }
                rest = rest.dropFirst(run.count)
                guard let first = run.first, first != "_", run.last != "_", !run.contains("__") else { return nil }
                let plain = run.filter { $0 != "_" }
                if !allowLeadingZero && plain.count > 1 && plain.hasPrefix("0") { return nil }
                return String(plain)
            }
            var text = ""
            if let sign = rest.first, sign == "+" || sign == "-" { text.append(sign); rest = rest.dropFirst() }
            guard let whole = digits(allowLeadingZero: false) else { return nil }
            text += whole
            var hasFraction = false, hasExponent = false
            if rest.first == "." {
                rest = rest.dropFirst()
                guard let fraction = digits(allowLeadingZero: true) else { return nil }
                text += "." + fraction
                hasFraction = true
            }
            if let e = rest.first, e == "e" || e == "E" {
                rest = rest.dropFirst()
                text += "e"
                if let sign = rest.first, sign == "+" || sign == "-" { text.append(sign); rest = rest.dropFirst() }
                guard let exponent = digits(allowLeadingZero: true) else { return nil }
                text += exponent
                hasExponent = true
            }
            guard rest.isEmpty, hasFraction || hasExponent else { return nil }
            return Double(text)
        }

        mutating func basicString() throws(TOMLError) -> String {
            i += 1 // opening quote
            var out: [UInt8] = []
            while true {
                guard let c = peek else { throw fail("string is not closed (missing '\"')") }
                i += 1
                if c == UInt8(ascii: "\"") { break }
                if c == UInt8(ascii: "\\") {
                    guard let e = peek else { throw fail("string ends in a lone backslash") }
                    i += 1
                    switch e {
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "\""): out.append(0x22)
                    case UInt8(ascii: "\\"): out.append(0x5C)
                    default: throw fail("unsupported escape \"\\\(Character(UnicodeScalar(e)))\" in string")
                    }
                    continue
                }
                if c < 0x20 && c != 0x09 { throw fail("control character in string") }
                out.append(c)
            }
            return String(decoding: out, as: UTF8.self)
        }

        mutating func literalString() throws(TOMLError) -> String {
            i += 1
            let start = i
            while let c = peek, c != UInt8(ascii: "'") { i += 1 }
            guard peek != nil else { throw fail("string is not closed (missing \"'\")") }
            let s = String(decoding: line[start..<i], as: UTF8.self)
            i += 1
            return s
        }
    }
}
