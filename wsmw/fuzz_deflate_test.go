package wsmw

import (
	"bytes"
	stdflate "compress/flate"
	"errors"
	"io"
	"testing"
	"unicode/utf8"
)

// FuzzInflate feeds arbitrary message payloads to the inflate path, twice in a row
// (the second with the first's context when takeover is set). It must never panic,
// never return more than the limit, report only the documented errors, and agree
// with the standard library whenever both succeed.
func FuzzInflate(f *testing.F) {
	for _, seed := range [][]byte{deflatedHello, deflatedHelloAgain, storedHello, helloFinal, helloTwoBlocks, {}, {0x00}, {0xff, 0xff}, zeroPayload(f, 5000)} {
		f.Add(seed, uint16(1024), true, false)
		f.Add(seed, uint16(4), false, true)
	}
	f.Fuzz(func(t *testing.T, data []byte, limit uint16, takeover, text bool) {
		lim := int64(limit)
		s := newDeflateState(DeflateParams{ClientNoContextTakeover: !takeover, ServerMaxWindowBits: 15, ClientMaxWindowBits: 15}, false, &CompressionOptions{})
		var history []byte // what the standard library's stream must produce
		for round := range 2 {
			inf := s.begin(nil, data, lim, text)
			out, err := inf.appendTo(nil)
			s.end(inf)
			switch {
			case int64(len(out)) > lim+1:
				t.Fatalf("round %d: %d bytes out with a limit of %d", round, len(out), lim)
			case err == nil && int64(len(out)) > lim:
				t.Fatalf("round %d: %d bytes accepted with a limit of %d", round, len(out), lim)
			case err == nil && text && !utf8.Valid(out):
				t.Fatalf("round %d: invalid UTF-8 accepted as text", round)
			case err != nil && !errors.Is(err, ErrPayloadTooBig) && !errors.Is(err, ErrInvalidCompression) && !errors.Is(err, ErrInvalidUTF8):
				t.Fatalf("round %d: unexpected error %v", round, err)
			}
			if err != nil {
				return
			}
			// The standard library, given the window as a dictionary, must agree.
			var dict []byte
			if takeover {
				dict = history
			}
			std, serr := io.ReadAll(io.LimitReader(stdflate.NewReaderDict(bytes.NewReader(append(bytes.Clone(data), deflateTail...)), dict), lim+1))
			if serr == nil && !bytes.Equal(std, out) {
				t.Fatalf("round %d: inflated %q, the standard library %q", round, out, std)
			}
			history = append(history, out...)
			if len(history) > 32<<10 {
				history = history[len(history)-32<<10:]
			}
		}
	})
}
