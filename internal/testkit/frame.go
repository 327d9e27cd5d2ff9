package testkit

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/wsgate/wsgate/wsmw"
)

// Frame is one frame as it is on the wire (RFC 6455 §5.2), its payload unmasked:
// what a raw peer sends, valid or not, and what it read.
type Frame struct {
	Fin     bool
	Rsv     byte // RSV bits in their wire positions (wsmw.RSV1, RSV2, RSV3)
	Op      wsmw.OpCode
	Masked  bool
	Key     [4]byte // the masking key, when Masked
	Payload []byte
}

// String shows a frame in a failure message: its header and up to 24 bytes of payload.
func (f Frame) String() string {
	p, suffix := f.Payload, ""
	if len(p) > 24 {
		p, suffix = p[:24], fmt.Sprintf("...(%d bytes)", len(f.Payload))
	}
	return fmt.Sprintf("{fin=%v rsv=%#x op=%v masked=%v %q%s}", f.Fin, f.Rsv, f.Op, f.Masked, p, suffix)
}

// Header returns the frame's header for wsmw's codec.
func (f Frame) Header() wsmw.Header {
	return wsmw.Header{Fin: f.Fin, Rsv: f.Rsv, OpCode: f.Op, Masked: f.Masked, Mask: f.Key, Length: int64(len(f.Payload))}
}

// MaskRandom returns f masked with a fresh random key, as a client sends it.
func (f Frame) MaskRandom() Frame {
	f.Masked, f.Key = true, RandomKey()
	return f
}

// CloseCode decodes a close frame's payload: see CloseCode.
func (f Frame) CloseCode() (int, string) { return CloseCode(f.Payload) }

// Text is a final text frame of s.
func Text(s string) Frame { return Frame{Fin: true, Op: wsmw.OpText, Payload: []byte(s)} }

// Binary is a final binary frame of p.
func Binary(p []byte) Frame { return Frame{Fin: true, Op: wsmw.OpBinary, Payload: p} }

// Ping is a ping frame with payload s.
func Ping(s string) Frame { return Frame{Fin: true, Op: wsmw.OpPing, Payload: []byte(s)} }

// Pong is a pong frame with payload s.
func Pong(s string) Frame { return Frame{Fin: true, Op: wsmw.OpPong, Payload: []byte(s)} }

// CloseFrame is a close frame with code (any 16-bit value, even 1005) and reason, unchecked.
func CloseFrame(code int, reason string) Frame {
	return Frame{Fin: true, Op: wsmw.OpClose, Payload: ClosePayload(code, reason)}
}

// ClosePayload is a close frame body as a peer may send it: code on two bytes
// and reason, whatever they are (wsmw.AppendClosePayload refuses invalid ones).
func ClosePayload(code int, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}

// CloseCode decodes a close frame body as it was sent, valid or not: 1005 (no
// status) for an empty body, -1 for a 1-byte one, else the code and reason.
func CloseCode(p []byte) (int, string) {
	code, reason, err := wsmw.ParseClosePayload(p)
	if err == nil {
		return int(code), reason
	}
	if len(p) < 2 {
		return -1, ""
	}
	return int(binary.BigEndian.Uint16(p)), string(p[2:])
}

// RandomKey returns a fresh masking key.
func RandomKey() (key [4]byte) {
	rand.Read(key[:])
	return key
}

// AppendFrame appends f's wire form to b: the header by wsmw.AppendHeader, the
// payload masked with f.Key by wsmw.Mask when f.Masked.
func AppendFrame(b []byte, f Frame) []byte {
	b = wsmw.AppendHeader(b, f.Header())
	start := len(b)
	b = append(b, f.Payload...)
	if f.Masked {
		wsmw.Mask(f.Key, 0, b[start:])
	}
	return b
}

// ErrFrameTooBig is ReadFrame's error for a frame longer than its limit.
var ErrFrameTooBig = errors.New("testkit: frame larger than the reader's limit")

// ReadFrame reads one frame by wsmw.ReadHeader and unmasks its payload. It
// applies no rule beyond the framing; frames longer than max are refused.
func ReadFrame(r io.Reader, max int64) (Frame, error) {
	h, err := wsmw.ReadHeader(r)
	if err != nil {
		return Frame{}, err
	}
	f := Frame{Fin: h.Fin, Rsv: h.Rsv, Op: h.OpCode, Masked: h.Masked, Key: h.Mask}
	if h.Length > max {
		return f, fmt.Errorf("%w: %d bytes", ErrFrameTooBig, h.Length)
	}
	f.Payload = make([]byte, h.Length)
	if _, err := io.ReadFull(r, f.Payload); err != nil {
		return f, err
	}
	if f.Masked {
		wsmw.Mask(f.Key, 0, f.Payload)
	}
	return f, nil
}

// Pattern returns n deterministic bytes: text from the lower-case alphabet, or
// binary i%251 (every byte value, not periodic at any power of two).
// integration/node/common.js builds the same.
func Pattern(n int, text bool) []byte {
	b := make([]byte, n)
	for i := range b {
		if text {
			b[i] = 'a' + byte(i%26)
		} else {
			b[i] = byte(i % 251)
		}
	}
	return b
}
