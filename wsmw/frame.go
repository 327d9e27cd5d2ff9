package wsmw

import (
	"encoding/binary"
	"io"
	"strconv"
)

// OpCode is a frame opcode (RFC 6455 §5.2).
type OpCode byte

// Opcodes defined by RFC 6455 §11.8.
const (
	OpContinuation OpCode = 0x0
	OpText         OpCode = 0x1
	OpBinary       OpCode = 0x2
	OpClose        OpCode = 0x8
	OpPing         OpCode = 0x9
	OpPong         OpCode = 0xA
)

// IsControl reports whether op is a control opcode (high bit set, §5.5).
func (op OpCode) IsControl() bool { return op&0x8 != 0 }

// IsData reports whether op starts a data message (text or binary).
func (op OpCode) IsData() bool { return op == OpText || op == OpBinary }

func (op OpCode) valid() bool {
	switch op {
	case OpContinuation, OpText, OpBinary, OpClose, OpPing, OpPong:
		return true
	}
	return false
}

func (op OpCode) String() string {
	switch op {
	case OpContinuation:
		return "continuation"
	case OpText:
		return "text"
	case OpBinary:
		return "binary"
	case OpClose:
		return "close"
	case OpPing:
		return "ping"
	case OpPong:
		return "pong"
	}
	return "opcode(" + strconv.Itoa(int(op)) + ")"
}

// RSV bits of the first header byte (§5.2), for use by extensions.
const (
	RSV1 byte = 0x40
	RSV2 byte = 0x20
	RSV3 byte = 0x10
)

const (
	maxControlPayload = 125
	// MaxHeaderSize is the largest frame header: 2 + 8 (64-bit length) + 4 (mask key).
	MaxHeaderSize = 14
)

// Header is a frame header (RFC 6455 §5.2). Length is the payload length; Mask is
// meaningful only when Masked is set.
type Header struct {
	Fin    bool
	Rsv    byte // RSV1|RSV2|RSV3 bits, in their wire positions
	OpCode OpCode
	Masked bool
	Mask   [4]byte
	Length int64
}

// Size returns the encoded size of h in bytes.
func (h *Header) Size() int {
	n := 2
	switch {
	case h.Length > 0xFFFF:
		n += 8
	case h.Length > 125:
		n += 2
	}
	if h.Masked {
		n += 4
	}
	return n
}

// AppendHeader appends the wire encoding of h to b, using the shortest length form.
func AppendHeader(b []byte, h Header) []byte {
	b0 := byte(h.OpCode) | h.Rsv&(RSV1|RSV2|RSV3)
	if h.Fin {
		b0 |= 0x80
	}
	var b1 byte
	if h.Masked {
		b1 = 0x80
	}
	switch {
	case h.Length > 0xFFFF:
		b = append(b, b0, b1|127)
		b = binary.BigEndian.AppendUint64(b, uint64(h.Length))
	case h.Length > 125:
		b = append(b, b0, b1|126)
		b = binary.BigEndian.AppendUint16(b, uint16(h.Length))
	default:
		b = append(b, b0, b1|byte(h.Length))
	}
	if h.Masked {
		b = append(b, h.Mask[:]...)
	}
	return b
}

// headerSize returns the full header size implied by its first two bytes.
func headerSize(b0, b1 byte) int {
	n := 2
	switch b1 & 0x7F {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 {
		n += 4
	}
	return n
}

// parseHeader decodes a complete header from b, which must hold headerSize(b[0], b[1])
// bytes. It checks only what the encoding itself forbids: a 64-bit length with the
// most significant bit set, and non-minimal length encodings.
func parseHeader(b []byte) (Header, error) {
	h := Header{
		Fin:    b[0]&0x80 != 0,
		Rsv:    b[0] & (RSV1 | RSV2 | RSV3),
		OpCode: OpCode(b[0] & 0x0F),
		Masked: b[1]&0x80 != 0,
	}
	i := 2
	switch l := b[1] & 0x7F; l {
	case 126:
		h.Length = int64(binary.BigEndian.Uint16(b[2:]))
		if h.Length < 126 {
			return h, errNonMinimalLength
		}
		i += 2
	case 127:
		u := binary.BigEndian.Uint64(b[2:])
		if u>>63 != 0 {
			return h, errLengthMSB
		}
		if u <= 0xFFFF {
			return h, errNonMinimalLength
		}
		h.Length = int64(u)
		i += 8
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		copy(h.Mask[:], b[i:i+4])
	}
	return h, nil
}

// ReadHeader reads and decodes one frame header from r. It is the stateless
// primitive under Conn.NextFrame; it applies no connection rules (masking, RSV, limits).
func ReadHeader(r io.Reader) (Header, error) {
	var a [MaxHeaderSize]byte
	if _, err := io.ReadFull(r, a[:2]); err != nil {
		return Header{}, err
	}
	n := headerSize(a[0], a[1])
	if _, err := io.ReadFull(r, a[2:n]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Header{}, err
	}
	return parseHeader(a[:n])
}

var (
	errNonMinimalLength = &protoErr{"non-minimal payload length encoding"}
	errLengthMSB        = &protoErr{"payload length has the most significant bit set"}
)

// protoErr is a framing rule violation; it unwraps to ErrProtocol and its text is the close reason.
type protoErr struct{ reason string }

func (e *protoErr) Error() string { return "websocket: protocol error: " + e.reason }
func (e *protoErr) Unwrap() error { return ErrProtocol }
