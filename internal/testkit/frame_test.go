package testkit

import (
	"bytes"
	"errors"
	"testing"

	"github.com/wsgate/wsgate/wsmw"
)

// The codec round-trips every length form, masked or not, and refuses frames
// over the reader's limit.
func TestFrameRoundTrip(t *testing.T) {
	for _, n := range []int{0, 125, 126, 65535, 65536} {
		for _, f := range []Frame{Binary(Pattern(n, false)), Binary(Pattern(n, false)).MaskRandom()} {
			f.Rsv = wsmw.RSV1
			got, err := ReadFrame(bytes.NewReader(AppendFrame(nil, f)), int64(n))
			if err != nil || got.Fin != f.Fin || got.Rsv != f.Rsv || got.Op != f.Op || got.Masked != f.Masked || got.Key != f.Key || !bytes.Equal(got.Payload, f.Payload) {
				t.Errorf("%d bytes, masked %v: read back %v, %v", n, f.Masked, got, err)
			}
			if _, err := ReadFrame(bytes.NewReader(AppendFrame(nil, f)), int64(n)-1); !errors.Is(err, ErrFrameTooBig) {
				t.Errorf("%d bytes with a limit of %d: %v, want ErrFrameTooBig", n, n-1, err)
			}
		}
	}
}

// CloseCode reads any close body as it was sent.
func TestCloseCode(t *testing.T) {
	for body, want := range map[string]int{"": 1005, "\x03": -1, "\x03\xe8bye": 1000, "\x03\xed": 1005, "\x03\xe8\xff": 1000} {
		if code, _ := CloseCode([]byte(body)); code != want {
			t.Errorf("CloseCode(%q) = %d, want %d", body, code, want)
		}
	}
	if code, reason := CloseFrame(4001, "bye").CloseCode(); code != 4001 || reason != "bye" {
		t.Errorf("CloseFrame(4001, bye) reads back as %d %q", code, reason)
	}
}
