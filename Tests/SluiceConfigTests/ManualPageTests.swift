import Foundation
import Testing
@testable import SluiceConfig

/// doc/sluice.toml.5 names every key the validator accepts, each in its table's section.
@Suite struct ManualPageTests {
    static let page: String = {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return (try? String(contentsOf: root.appendingPathComponent("doc/sluice.toml.5"), encoding: .utf8)) ?? ""
    }()

    /// The text of the page's `.SH header` section.
    static func section(_ header: String) -> String {
        let parts = page.components(separatedBy: "\n.SH ")
        return parts.first { $0.hasPrefix(header + "\n") } ?? ""
    }

    @Test(arguments: [("[sluice]", Validator.sluiceKeys), ("[[sa]]", Validator.saKeys), ("[[policy]]", Validator.policyKeys),
                      ("[[connection]]", Validator.connectionKeys), ("[[connection.child]]", Validator.childKeys),
                      ("[ike]", Set(IKESettings.keys))])
    func everyKeyIsDocumented(table: String, keys: Set<String>) {
        let text = Self.section(table)
        #expect(!text.isEmpty, "doc/sluice.toml.5 has no section \(table)")
        let words = Set(text.split(whereSeparator: { !($0.isLetter || $0.isNumber || $0 == "_") }).map(String.init))
        let missing = keys.subtracting(words).sorted()
        #expect(missing.isEmpty, "\(table) keys missing from doc/sluice.toml.5: \(missing)")
    }
}
