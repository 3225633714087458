// libFuzzer target for the IKEv2 message codec: everything a peer's datagram reaches before
// any crypto (IKEMessage.decodeHeader / decode) and what a decrypted SK payload reaches
// (Payload.decodeChain). Built by fuzz/run.sh with `swiftc -sanitize=fuzzer,address`, compiled
// together with Sources/SluiceIKE/Wire against an instrumented SluiceCore module.
//
// The first input byte picks how the rest is used:
//   even: a whole datagram, into decodeHeader and decode
//   odd:  the next byte is the first payload type, the rest a decrypted chain, into decodeChain
// Whatever decodes must re-encode to something that decodes to the same value and encodes to
// the same bytes again, and never to more bytes than came in (the encoder only drops what the
// decoder skipped: unknown attributes, reserved bits, proposals Sluice cannot negotiate). The
// one value that cannot come back is an SA payload whose every proposal was dropped: it
// encodes as an empty SA payload, which decoding refuses.
import SluiceCore
import SluiceIKE

func hasEmptySA(_ payloads: [Payload]) -> Bool {
    payloads.contains { if case let .sa(proposals) = $0 { return proposals.isEmpty }; return false }
}

/// The decode error of re-decoding an empty SA must be exactly that one.
func expectEmptySAError(_ error: IKEDecodeError) {
    precondition(error.kind == .malformed("SA payload has no proposals"), "re-decoding failed otherwise: \(error)")
}

func checkMessage(_ bytes: [UInt8]) {
    let header = try? IKEMessage.decodeHeader(bytes)
    guard let message = try? IKEMessage.decode(bytes) else { return }
    precondition(header == message.header, "decodeHeader and decode disagree")
    let encoded = message.encode()
    precondition(encoded.count <= bytes.count, "re-encoding grew the message from \(bytes.count) to \(encoded.count) bytes")
    do {
        let again = try IKEMessage.decode(encoded)
        precondition(again.payloads == message.payloads, "payloads changed in the round trip")
        var h = message.header
        h.length = UInt32(encoded.count)
        precondition(again.header == h, "header changed in the round trip")
        precondition(again.encode() == encoded, "encoding is not stable")
    } catch {
        precondition(hasEmptySA(message.payloads), "a decoded message did not decode after encoding: \(error)")
        expectEmptySAError(error)
    }
}

func checkChain(first: UInt8, _ bytes: [UInt8]) {
    guard let payloads = try? Payload.decodeChain(first: first, bytes, baseOffset: 28) else { return }
    let (encodedFirst, encoded) = Payload.encodeChain(payloads)
    precondition(encoded.count <= bytes.count, "re-encoding grew the chain")
    precondition(payloads.isEmpty ? encodedFirst == 0 : encodedFirst == first, "first payload type changed")
    do {
        let again = try Payload.decodeChain(first: encodedFirst, encoded)
        precondition(again == payloads, "chain changed in the round trip")
        precondition(Payload.encodeChain(again).bytes == encoded, "chain encoding is not stable")
    } catch {
        precondition(hasEmptySA(payloads), "a decoded chain did not decode after encoding: \(error)")
        expectEmptySAError(error)
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size >= 2, size < 70000 else { return 0 }
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    if input[0] % 2 == 0 {
        checkMessage(Array(input[1...]))
    } else {
        checkChain(first: input[1], Array(input[2...]))
    }
    return 0
}
