import NIOCore

/// Reads PostgreSQL protocol frames from a stream of byte buffers, however the stream is cut.
///
/// A frame is a type byte, a length that counts itself, and a body. The reader hands over the
/// type of every frame, and the body of the few types a pool needs (they are small); other
/// bodies (rows, often large) are skipped by their length, never copied. Frontend frames before
/// the StartupMessage have no type byte: they are reported as ``sslRequest`` or ``startup``.
struct FrameReader {
    /// The type reported for an untyped SSLRequest frame.
    static let sslRequest: UInt8 = 0
    /// The type reported for an untyped StartupMessage (or any other untyped frame).
    static let startup: UInt8 = 1
    /// Bodies larger than this are never kept: none of the frames read here is ever as large.
    static let largestKeptBody = 64 * 1024

    /// Whether the next frame has no type byte (a frontend before its StartupMessage).
    private var untypedFrames: Bool
    private var header = ByteBuffer()
    private var body = ByteBuffer()
    /// The frame whose body is being kept, and the body's length.
    private var keeping: (type: UInt8, length: Int)?
    /// Bytes of a body still to skip.
    private var skipping = 0
    private var broken = false

    init(untypedFrames: Bool) {
        self.untypedFrames = untypedFrames
    }

    /// Whether the reader stands between two frames: nothing of a frame read in part.
    var isBetweenFrames: Bool {
        !self.broken && self.header.readableBytes == 0 && self.keeping == nil && self.skipping == 0
    }

    /// Whether `type` is a frame whose body the pool reads: BackendKeyData, ReadyForQuery,
    /// ErrorResponse, ParameterStatus, and the untyped frames (their first four bytes are a code).
    private static func keepsBody(_ type: UInt8) -> Bool {
        switch type {
        case UInt8(ascii: "K"), UInt8(ascii: "Z"), UInt8(ascii: "E"), UInt8(ascii: "S"), sslRequest, startup: true
        default: false
        }
    }

    /// Reads `bytes` to their end and calls `frame` for each frame completed in them.
    ///
    /// - Returns: `false` once the stream is not the protocol (a length below 4); nothing more
    ///   is read then.
    mutating func read(_ bytes: inout ByteBuffer, frame: (UInt8, inout ByteBuffer) -> Void) -> Bool {
        while !self.broken, bytes.readableBytes > 0 {
            if self.skipping > 0 {
                let count = min(self.skipping, bytes.readableBytes)
                bytes.moveReaderIndex(forwardBy: count)
                self.skipping -= count
                continue
            }
            if let keeping = self.keeping {
                var slice = bytes.readSlice(length: min(keeping.length - self.body.readableBytes, bytes.readableBytes))!
                self.body.writeBuffer(&slice)
                if self.body.readableBytes == keeping.length {
                    self.keeping = nil
                    frame(keeping.type, &self.body)
                    self.body.clear()
                }
                continue
            }
            let headerLength = self.untypedFrames ? 8 : 5
            let type: UInt8
            let bodyLength: Int
            // A whole header in `bytes` is read where it is; a cut one is gathered first.
            let whole = self.header.readableBytes == 0 && bytes.readableBytes >= headerLength
            if !whole {
                var slice = bytes.readSlice(length: min(headerLength - self.header.readableBytes, bytes.readableBytes))!
                self.header.writeBuffer(&slice)
                guard self.header.readableBytes == headerLength else { continue }
            }
            if self.untypedFrames {
                let (length, code) = whole
                    ? bytes.readMultipleIntegers(as: (Int32, Int32).self)! : self.header.readMultipleIntegers(as: (Int32, Int32).self)!
                guard length >= 8 else { self.broken = true; break }
                type = code == 80_877_103 ? Self.sslRequest : Self.startup
                if type == Self.startup { self.untypedFrames = false }
                bodyLength = Int(length) - 8
            } else {
                let (frameType, length) = whole
                    ? bytes.readMultipleIntegers(as: (UInt8, Int32).self)! : self.header.readMultipleIntegers(as: (UInt8, Int32).self)!
                guard length >= 4 else { self.broken = true; break }
                type = frameType
                bodyLength = Int(length) - 4
            }
            if !whole { self.header.clear() }
            if Self.keepsBody(type), bodyLength <= Self.largestKeptBody, type != Self.startup {
                if bodyLength == 0 {
                    frame(type, &self.body)
                } else if bytes.readableBytes >= bodyLength {
                    var whole = bytes.readSlice(length: bodyLength)!
                    frame(type, &whole)
                } else {
                    self.keeping = (type, bodyLength)
                }
            } else {
                // `body` is empty here: no buffer made per frame.
                frame(type, &self.body)
                self.skipping = bodyLength
            }
        }
        return !self.broken
    }
}
