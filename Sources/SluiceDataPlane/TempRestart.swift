import SluiceConfig
// TEMPORARY until helper-a's Config lands.
extension SluiceConfiguration {
    var replayMarkInterval: Int { 4096 }
    func restartRequired(comparedTo o: SluiceConfiguration) -> [ConfigIssue] {
        var out: [ConfigIssue] = []
        if queues != o.queues || queueBase != o.queueBase || markShift != o.markShift || fail != o.fail || stateDir != o.stateDir
            || controlSocket != o.controlSocket || gso != o.gso || passthrough != o.passthrough || batch != o.batch {
            out.append(ConfigIssue(file: path, line: 0, message: "needs a restart"))
        }
        return out
    }
}
