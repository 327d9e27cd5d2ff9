package wsmw

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	lengths := []struct {
		n    int64
		size int // encoded size without the mask key
	}{
		{0, 2}, {1, 2}, {125, 2},
		{126, 4}, {127, 4}, {255, 4}, {256, 4}, {65535, 4},
		{65536, 10}, {1 << 24, 10}, {1<<32 - 1, 10}, {1 << 32, 10}, {1<<63 - 1, 10},
	}
	ops := []OpCode{OpContinuation, OpText, OpBinary, OpClose, OpPing, OpPong, 3, 0xB, 0xF}
	for _, l := range lengths {
		for _, masked := range []bool{false, true} {
			for _, op := range ops {
				for _, fin := range []bool{false, true} {
					for _, rsv := range []byte{0, RSV1, RSV2, RSV3, RSV1 | RSV2 | RSV3} {
						h := Header{Fin: fin, Rsv: rsv, OpCode: op, Masked: masked, Length: l.n}
						if masked {
							h.Mask = [4]byte{1, 0xff, byte(l.n), byte(op)}
						}
						b := AppendHeader(nil, h)
						want := l.size
						if masked {
							want += 4
						}
						if len(b) != want || h.Size() != want {
							t.Fatalf("%+v: encoded %d bytes, Size %d, want %d", h, len(b), h.Size(), want)
						}
						if len(b) > MaxHeaderSize {
							t.Fatalf("%+v: %d bytes > MaxHeaderSize", h, len(b))
						}
						got, err := ReadHeader(bytes.NewReader(b))
						if err != nil {
							t.Fatalf("%+v: ReadHeader(%x) = %v", h, b, err)
						}
						if got != h {
							t.Fatalf("round trip of %+v gave %+v", h, got)
						}
						// Followed by the payload's first bytes: only the header is consumed.
						r := bytes.NewReader(append(append([]byte(nil), b...), "payload"...))
						if _, err := ReadHeader(r); err != nil || r.Len() != len("payload") {
							t.Fatalf("%+v: ReadHeader consumed %d extra bytes (%v)", h, len("payload")-r.Len(), err)
						}
					}
				}
			}
		}
	}
}

func TestHeaderWireFormat(t *testing.T) {
	for _, tc := range []struct {
		h    Header
		wire []byte
	}{
		// RFC 6455 §5.7 examples.
		{Header{Fin: true, OpCode: OpText, Length: 5}, []byte{0x81, 0x05}},
		{Header{Fin: true, OpCode: OpText, Masked: true, Mask: [4]byte{0x37, 0xfa, 0x21, 0x3d}, Length: 5}, []byte{0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d}},
		{Header{Fin: false, OpCode: OpText, Length: 3}, []byte{0x01, 0x03}},
		{Header{Fin: true, OpCode: OpContinuation, Length: 2}, []byte{0x80, 0x02}},
		{Header{Fin: true, OpCode: OpPing, Length: 5}, []byte{0x89, 0x05}},
		{Header{Fin: true, OpCode: OpBinary, Length: 256}, []byte{0x82, 0x7E, 0x01, 0x00}},
		{Header{Fin: true, OpCode: OpBinary, Length: 65536}, []byte{0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0}},
		{Header{Fin: true, Rsv: RSV1, OpCode: OpText, Length: 0}, []byte{0xC1, 0x00}},
		{Header{Rsv: RSV2 | RSV3, OpCode: OpPong}, []byte{0x3A, 0x00}},
	} {
		if got := AppendHeader(nil, tc.h); !bytes.Equal(got, tc.wire) {
			t.Errorf("AppendHeader(%+v) = %x, want %x", tc.h, got, tc.wire)
		}
		got, err := ReadHeader(bytes.NewReader(tc.wire))
		if err != nil || got != tc.h {
			t.Errorf("ReadHeader(%x) = %+v, %v; want %+v", tc.wire, got, err, tc.h)
		}
	}
	// AppendHeader appends.
	if got := AppendHeader([]byte("x"), Header{OpCode: OpText}); !bytes.Equal(got, []byte{'x', 0x01, 0x00}) {
		t.Errorf("AppendHeader did not append: %x", got)
	}
}

func TestReadHeaderErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		input []byte
		want  error
	}{
		{"Empty", nil, io.EOF},
		{"OneByte", []byte{0x81}, io.ErrUnexpectedEOF},
		{"Short16", []byte{0x82, 126, 0x01}, io.ErrUnexpectedEOF},
		{"Short64", []byte{0x82, 127, 0, 0, 0, 0, 0, 1}, io.ErrUnexpectedEOF},
		{"ShortMask", []byte{0x82, 0x85, 1, 2, 3}, io.ErrUnexpectedEOF},
		{"NoMaskAfter16", []byte{0x82, 0x80 | 126, 0x01, 0x00}, io.ErrUnexpectedEOF},
		{"NonMinimal16", []byte{0x82, 126, 0x00, 0x7D}, ErrProtocol},
		{"NonMinimal16Zero", []byte{0x82, 126, 0x00, 0x00}, ErrProtocol},
		{"NonMinimal64", []byte{0x82, 127, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF}, ErrProtocol},
		{"NonMinimal64Small", []byte{0x82, 127, 0, 0, 0, 0, 0, 0, 0, 5}, ErrProtocol},
		{"MSB", []byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0}, ErrProtocol},
		{"MSBMasked", []byte{0x82, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4}, ErrProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadHeader(bytes.NewReader(tc.input))
			if !errors.Is(err, tc.want) {
				t.Errorf("ReadHeader(%x) = %v, want %v", tc.input, err, tc.want)
			}
		})
	}
	// The smallest valid encodings at each boundary are accepted.
	for _, b := range [][]byte{
		{0x82, 125},
		{0x82, 126, 0x00, 0x7E},
		{0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0},
		{0x82, 127, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF},
	} {
		if _, err := ReadHeader(bytes.NewReader(b)); err != nil {
			t.Errorf("ReadHeader(%x) = %v", b, err)
		}
	}
}

func TestOpCode(t *testing.T) {
	for op := OpCode(0); op < 16; op++ {
		wantControl := op >= 8
		if op.IsControl() != wantControl {
			t.Errorf("%v.IsControl() = %v", op, op.IsControl())
		}
		if op.IsData() != (op == OpText || op == OpBinary) {
			t.Errorf("%v.IsData() = %v", op, op.IsData())
		}
		wantValid := op <= 2 || (op >= 8 && op <= 0xA)
		if op.valid() != wantValid {
			t.Errorf("%v.valid() = %v", op, op.valid())
		}
	}
	for op, s := range map[OpCode]string{
		OpContinuation: "continuation", OpText: "text", OpBinary: "binary",
		OpClose: "close", OpPing: "ping", OpPong: "pong", 3: "opcode(3)", 0xF: "opcode(15)",
	} {
		if op.String() != s {
			t.Errorf("OpCode(%d).String() = %q, want %q", byte(op), op.String(), s)
		}
	}
}
