package wsmw

import (
	"bytes"
	stdflate "compress/flate"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// RFC 7692 §7.2.3 examples, each the payload of a message that inflates to "Hello".
var (
	deflatedHello      = []byte{0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}                                     // §7.2.3.1
	deflatedHelloAgain = []byte{0xf2, 0x00, 0x11, 0x00, 0x00}                                                 // §7.2.3.2, after deflatedHello with context takeover
	storedHello        = []byte{0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00}             // §7.2.3.3
	helloFinal         = []byte{0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00}                               // §7.2.3.4, BFINAL set
	helloTwoBlocks     = []byte{0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00} // §7.2.3.5
)

// defaultParams are the default parameters: context takeover both ways, 15-bit windows.
var defaultParams = DeflateParams{ServerMaxWindowBits: 15, ClientMaxWindowBits: 15}

// deflateCfg is a connConfig with permessage-deflate negotiated as p, for the given role.
func deflateCfg(p DeflateParams, client bool, o *CompressionOptions) connConfig {
	if o == nil {
		o = &CompressionOptions{}
	}
	return connConfig{rsvAllowed: RSV1, extensions: FormatExtensions([]ExtensionOffer{p.response(false)}), pmd: newDeflateState(p, client, o)}
}

// compressedFrame is a masked client frame with RSV1 carrying payload.
func compressedFrame(op OpCode, payload []byte) []byte {
	return rawFrame(true, RSV1, op, true, payload)
}

// stdInflate decodes the payloads of consecutive compressed messages with the
// standard library, as one stream (context takeover), and returns each message.
func stdInflate(t testing.TB, payloads ...[]byte) []string {
	t.Helper()
	var out []string
	var stream bytes.Buffer
	prev := 0
	for _, p := range payloads {
		stream.Write(p)
		stream.Write([]byte{0, 0, 0xff, 0xff})
		all, err := io.ReadAll(stdflate.NewReader(bytes.NewReader(append(bytes.Clone(stream.Bytes()), 0x01, 0, 0, 0xff, 0xff))))
		if err != nil {
			t.Fatalf("standard library cannot inflate %x: %v", p, err)
		}
		out = append(out, string(all[prev:]))
		prev = len(all)
	}
	return out
}

func TestDeflate_RFC7692Vectors(t *testing.T) {
	cases := []struct {
		name   string
		frames [][]byte
		want   []string
	}{
		{"Hello", [][]byte{compressedFrame(OpText, deflatedHello)}, []string{"Hello"}},
		{"ContextTakeover", [][]byte{compressedFrame(OpText, deflatedHello), compressedFrame(OpText, deflatedHelloAgain)}, []string{"Hello", "Hello"}},
		{"StoredBlock", [][]byte{compressedFrame(OpText, storedHello)}, []string{"Hello"}},
		{"BFINAL", [][]byte{compressedFrame(OpText, helloFinal), compressedFrame(OpText, deflatedHello)}, []string{"Hello", "Hello"}},
		{"TwoBlocks", [][]byte{compressedFrame(OpText, helloTwoBlocks)}, []string{"Hello"}},
		{"Fragmented", [][]byte{
			rawFrame(false, RSV1, OpText, true, deflatedHello[:3]),
			clientFrame(OpPing, "in between"),
			rawFrame(true, 0, OpContinuation, true, deflatedHello[3:]),
		}, []string{"Hello"}},
		{"FragmentedWithEmptyFrames", [][]byte{
			rawFrame(false, RSV1, OpBinary, true, nil),
			rawFrame(false, 0, OpContinuation, true, deflatedHello[:1]),
			rawFrame(false, 0, OpContinuation, true, nil),
			rawFrame(true, 0, OpContinuation, true, deflatedHello[1:]),
		}, []string{"Hello"}},
		{"EmptyPayloads", [][]byte{compressedFrame(OpText, nil), compressedFrame(OpBinary, []byte{0x00}), rawFrame(false, RSV1, OpText, true, nil), rawFrame(true, 0, OpContinuation, true, nil)}, []string{"", "", ""}},
		{"MixedWithUncompressed", [][]byte{compressedFrame(OpText, deflatedHello), clientFrame(OpText, "plain"), compressedFrame(OpText, deflatedHelloAgain)}, []string{"Hello", "plain", "Hello"}},
	}
	for _, tc := range cases {
		for _, mode := range []string{"ReadMessage", "NextFrame+Inflate"} {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				c, raw := tcpPair(t, false, deflateCfg(defaultParams, false, nil))
				go raw.Write(concat(tc.frames...))
				for i, want := range tc.want {
					got := readOne(t, c, mode)
					if got != want {
						t.Fatalf("message %d = %q, want %q", i, got, want)
					}
				}
			})
		}
	}
}

// readOne reads one data message with the given API and returns its text.
func readOne(t testing.TB, c *Conn, mode string) string {
	t.Helper()
	switch mode {
	case "ReadMessage":
		_, p, err := c.readMessage()
		if err != nil {
			t.Fatalf("ReadMessage: %v", err)
		}
		return string(p)
	}
	// Frame level: collect the raw message, inflate it when its first frame had RSV1.
	var msg []byte
	compressed := false
	first := true
	for {
		h, err := c.nextFrame()
		if err != nil {
			t.Fatalf("NextFrame: %v", err)
		}
		if h.OpCode.IsControl() {
			continue
		}
		if first {
			compressed, first = h.Rsv&RSV1 != 0, false
		}
		p, err := io.ReadAll(payloadReader{c})
		if err != nil {
			t.Fatalf("payload: %v", err)
		}
		msg = append(msg, p...)
		if h.Fin {
			break
		}
	}
	if !compressed {
		return string(msg)
	}
	out, err := c.inflate(nil, msg)
	if err != nil {
		t.Fatalf("Inflate(%x): %v", msg, err)
	}
	return string(out)
}

// TestDeflate_EncoderMatchesVectors checks that what WriteMessage sends decodes,
// with an independent inflater, to the same text as the RFC examples.
func TestDeflate_EncoderMatchesVectors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		p        DeflateParams
		takeover bool
	}{
		{"ContextTakeover", defaultParams, true},
		{"NoContextTakeover", DeflateParams{ServerNoContextTakeover: true, ClientNoContextTakeover: true, ServerMaxWindowBits: 15, ClientMaxWindowBits: 15}, false},
		{"Window8", DeflateParams{ServerMaxWindowBits: 8, ClientMaxWindowBits: 8}, true},
	} {
		for _, client := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/client=%v", tc.name, client), func(t *testing.T) {
				c, raw := tcpPair(t, client, deflateCfg(tc.p, client, &CompressionOptions{Threshold: -1}))
				hello := strings.Repeat("Hello", 40)
				errc := async(func() error {
					for _, m := range []string{"Hello", "Hello", hello, hello} {
						if err := c.writeMessage(OpText, []byte(m)); err != nil {
							return err
						}
					}
					return nil
				})
				var payloads [][]byte
				for range 4 {
					h, p, err := readRawFrame(raw)
					if err != nil {
						t.Fatal(err)
					}
					if !h.Fin || h.OpCode != OpText || h.Masked != client {
						t.Fatalf("frame header %+v: want a final text frame, masked=%v", h, client)
					}
					if h.Rsv != RSV1 {
						// Only without context takeover may a message that does not shrink go as it is.
						if tc.takeover || len(p) > 5 {
							t.Fatalf("frame header %+v: want RSV1", h)
						}
						var b bytes.Buffer
						w, _ := stdflate.NewWriter(&b, stdflate.NoCompression)
						w.Write(p)
						w.Flush()
						p = b.Bytes()[:b.Len()-4]
					}
					payloads = append(payloads, p)
				}
				if err := waitErr(t, errc, 5*time.Second, "WriteMessage"); err != nil {
					t.Fatal(err)
				}
				var got []string
				if tc.takeover {
					got = stdInflate(t, payloads...)
				} else {
					for _, p := range payloads {
						got = append(got, stdInflate(t, p)...)
					}
				}
				if want := []string{"Hello", "Hello", hello, hello}; fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("decoded %q, want %q", got, want)
				}
				// With context takeover the repeated message refers back to the first.
				if tc.takeover && len(payloads[3]) >= len(payloads[2]) {
					t.Errorf("repeated message: %d bytes, first %d: context not used", len(payloads[3]), len(payloads[2]))
				}
				if !tc.takeover && len(payloads[3]) != len(payloads[2]) {
					t.Errorf("without context takeover the same message compresses alike: %d vs %d bytes", len(payloads[3]), len(payloads[2]))
				}
			})
		}
	}
}

// TestDeflate_ThresholdAndFrames: messages under the threshold and frames
// written with WriteFrame go out uncompressed.
func TestDeflate_ThresholdAndFrames(t *testing.T) {
	c, raw := tcpPair(t, true, deflateCfg(defaultParams, true, &CompressionOptions{Threshold: 10}))
	errc := async(func() error {
		if err := c.writeMessage(OpText, []byte("short")); err != nil {
			return err
		}
		if err := c.writeMessage(OpBinary, bytes.Repeat([]byte("a"), 10)); err != nil {
			return err
		}
		if err := c.WriteFrame(Header{OpCode: OpText}, bytes.Repeat([]byte("b"), 100)); err != nil {
			return err
		}
		if err := c.WriteFrame(Header{Fin: true, OpCode: OpContinuation}, nil); err != nil {
			return err
		}
		return c.Ping([]byte(strings.Repeat("p", 100)))
	})
	want := []struct {
		rsv byte
		op  OpCode
	}{{0, OpText}, {RSV1, OpBinary}, {0, OpText}, {0, OpContinuation}, {0, OpPing}}
	for i, w := range want {
		h, _, err := readRawFrame(raw)
		if err != nil {
			t.Fatal(err)
		}
		if h.Rsv != w.rsv || h.OpCode != w.op {
			t.Errorf("frame %d: rsv %#x op %v, want rsv %#x op %v", i, h.Rsv, h.OpCode, w.rsv, w.op)
		}
	}
	if err := waitErr(t, errc, 5*time.Second, "writes"); err != nil {
		t.Fatal(err)
	}
	if d := (&CompressionOptions{}).threshold(); d != DefaultCompressionThreshold {
		t.Errorf("default threshold %d", d)
	}
}

// TestDeflate_IncompressibleSentPlain: without context takeover a message that
// does not shrink goes out uncompressed.
func TestDeflate_IncompressibleSentPlain(t *testing.T) {
	p := DeflateParams{ServerNoContextTakeover: true, ServerMaxWindowBits: 15, ClientMaxWindowBits: 15}
	c, raw := tcpPair(t, false, deflateCfg(p, false, nil))
	random := make([]byte, 4096)
	for i := range random {
		random[i] = byte(rand.Uint32())
	}
	go c.writeMessage(OpBinary, random)
	h, got, err := readRawFrame(raw)
	if err != nil {
		t.Fatal(err)
	}
	if h.Rsv != 0 || !bytes.Equal(got, random) {
		t.Fatalf("rsv %#x, payload equal %v: want the message as it is", h.Rsv, bytes.Equal(got, random))
	}
}

func TestDeflate_FailureCodes(t *testing.T) {
	var bad bytes.Buffer // valid DEFLATE of invalid UTF-8
	w, _ := stdflate.NewWriter(&bad, 1)
	w.Write([]byte("ok \xff\xfe"))
	w.Flush()
	badUTF8 := bad.Bytes()[:bad.Len()-4]
	var trunc bytes.Buffer // text ending inside a character
	w.Reset(&trunc)
	w.Write([]byte("ok \xe2\x82"))
	w.Flush()
	truncUTF8 := trunc.Bytes()[:trunc.Len()-4]

	cases := []struct {
		name     string
		input    []byte
		code     StatusCode
		sentinel error
	}{
		{"ReservedBlockType", compressedFrame(OpBinary, []byte{0xff, 0xff, 0xff}), StatusInvalidPayload, ErrInvalidCompression},
		{"BadStoredLength", compressedFrame(OpBinary, []byte{0x00, 0x05, 0x00, 0x00, 0x00, 'x'}), StatusInvalidPayload, ErrInvalidCompression},
		{"Truncated", compressedFrame(OpBinary, storedHello[:7]), StatusInvalidPayload, ErrInvalidCompression},
		{"InvalidUTF8AfterInflate", compressedFrame(OpText, badUTF8), StatusInvalidPayload, ErrInvalidUTF8},
		{"TextEndsInsideCharacter", compressedFrame(OpText, truncUTF8), StatusInvalidPayload, ErrInvalidUTF8},
		{"RSV1OnContinuation", concat(rawFrame(false, RSV1, OpText, true, deflatedHello[:2]), rawFrame(true, RSV1, OpContinuation, true, deflatedHello[2:])), StatusProtocolError, ErrProtocol},
		{"RSV2", rawFrame(true, RSV2, OpText, true, deflatedHello), StatusProtocolError, ErrProtocol},
		{"RSV1OnPing", rawFrame(true, RSV1, OpPing, true, nil), StatusProtocolError, ErrProtocol},
		{"OverLimitAfterInflate", compressedFrame(OpBinary, zeroPayload(t, 2048)), StatusMessageTooBig, ErrPayloadTooBig},
	}
	for _, tc := range cases {
		for _, mode := range []string{"ReadMessage"} {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				cfg := deflateCfg(defaultParams, false, nil)
				cfg.maxMessage = 1024
				c, raw := tcpPair(t, false, cfg)
				go raw.Write(concat(tc.input, closeReply(false, tc.code))) // the close reply is there for the drain
				var err error
				_, _, err = c.readMessage()
				checkFail(t, err, tc.code, tc.sentinel)
				if code, _, _ := expectClose(t, raw, 5*time.Second); code != tc.code {
					t.Errorf("close code sent %v, want %v", code, tc.code)
				}
			})
		}
	}
}

// zeroPayload is n zero bytes compressed at the best level, with the tail stripped.
func zeroPayload(t testing.TB, n int) []byte {
	var b bytes.Buffer
	w, _ := stdflate.NewWriter(&b, stdflate.BestCompression)
	chunk := make([]byte, 1<<20)
	for n > 0 {
		k := min(n, len(chunk))
		w.Write(chunk[:k])
		n -= k
	}
	w.Flush()
	return b.Bytes()[:b.Len()-4]
}

// TestDeflate_DecompressionBomb: 100 MiB of zeros in ~100 KiB against a 1 MiB
// limit fails with 1009 after inflating little more than the limit.
func TestDeflate_DecompressionBomb(t *testing.T) {
	bomb := zeroPayload(t, 100<<20)
	t.Logf("100 MiB of zeros compress to %d bytes", len(bomb))
	for _, mode := range []string{"ReadMessage"} {
		t.Run(mode, func(t *testing.T) {
			cfg := deflateCfg(defaultParams, false, nil)
			cfg.maxMessage = 1 << 20
			cfg.closeTimeout = 100 * time.Millisecond // the raw peer does not answer the close
			c, raw := tcpPair(t, false, cfg)
			go raw.Write(compressedFrame(OpBinary, bomb))
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			var err error
			_, _, err = c.readMessage()
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)
			checkFail(t, err, StatusMessageTooBig, ErrPayloadTooBig)
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("failed after %v, %d KiB allocated", elapsed, alloc>>10)
			if alloc > 8<<20 {
				t.Errorf("allocated %d KiB: the bomb was inflated past the limit", alloc>>10)
			}
			if elapsed > 2*time.Second {
				t.Errorf("took %v", elapsed)
			}
		})
	}
}

// TestDeflate_Inflate covers the helper for frame-level readers: the limit, bad
// data, and a Conn without the extension.
func TestDeflate_Inflate(t *testing.T) {
	cfg := deflateCfg(DeflateParams{ClientNoContextTakeover: true, ServerMaxWindowBits: 15, ClientMaxWindowBits: 15}, false, nil)
	cfg.maxMessage = 1000
	c, _ := tcpPair(t, false, cfg)
	out, err := c.inflate([]byte("> "), deflatedHello)
	if err != nil || string(out) != "> Hello" {
		t.Fatalf("Inflate = %q, %v", out, err)
	}
	if out, err := c.inflate(nil, nil); err != nil || len(out) != 0 {
		t.Errorf("Inflate of an empty payload = %q, %v", out, err)
	}
	if _, err := c.inflate(nil, deflatedHelloAgain); !errors.Is(err, ErrInvalidCompression) {
		t.Errorf("back-reference without context takeover: %v, want ErrInvalidCompression", err)
	}
	if out, err := c.inflate(nil, zeroPayload(t, 1001)); !errors.Is(err, ErrPayloadTooBig) || len(out) > 1001 {
		t.Errorf("1001 bytes with a limit of 1000: %d bytes, %v", len(out), err)
	}
	if out, err := c.inflate(nil, zeroPayload(t, 1000)); err != nil || len(out) != 1000 {
		t.Errorf("1000 bytes with a limit of 1000: %d bytes, %v", len(out), err)
	}
	plain, _ := tcpPair(t, false, connConfig{})
	if _, err := plain.inflate(nil, deflatedHello); !errors.Is(err, ErrInvalidCompression) {
		t.Errorf("without permessage-deflate: %v", err)
	}
	if _, ok := plain.Compression(); ok {
		t.Error("Compression() reports the extension without it")
	}
}

// deflateConns connects our client to our server over HTTP, returning both Conns.
func deflateConns(t testing.TB, scfg *ServerConfig, dcfg *DialConfig) (srv, cli *Conn) {
	t.Helper()
	ch := make(chan *Conn, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Upgrade(w, r, scfg)
		if err != nil {
			t.Errorf("Upgrade: %v", err)
		}
		ch <- c
	}))
	t.Cleanup(ts.Close)
	cli, _, err := Dial(context.Background(), ts.URL, dcfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	srv = <-ch
	if srv == nil {
		t.FailNow()
	}
	t.Cleanup(func() { cli.CloseNow(); srv.CloseNow() })
	return srv, cli
}

// deflateMessages are the payloads exchanged by round-trip tests.
func deflateMessages() [][]byte {
	random := make([]byte, 300<<10)
	for i := range random {
		random[i] = byte(rand.Uint32())
	}
	return [][]byte{
		[]byte(""),
		[]byte("x"),
		[]byte(strings.Repeat("héllo wörld ", 20)),
		jsonPayload(1 << 10),
		jsonPayload(1 << 10),
		jsonPayload(64 << 10),
		bytes.Repeat([]byte("compressible "), 1<<17), // 1.6 MiB
		random,
		[]byte(strings.Repeat("héllo wörld ", 20)),
	}
}

// jsonPayload is about n bytes of JSON-like text with repeated keys and varying values.
func jsonPayload(n int) []byte {
	var b bytes.Buffer
	b.WriteString("[")
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, `{"id":%d,"user":"user%d","event":"%s","ts":%d,"value":%.3f},`,
			rand.IntN(1e6), rand.IntN(1000), []string{"click", "view", "purchase", "scroll"}[rand.IntN(4)],
			1700000000+rand.IntN(1e6), rand.Float64()*100)
	}
	return b.Bytes()[:n]
}

func TestDeflate_RoundTrip(t *testing.T) {
	opts := []struct {
		name     string
		srv, cli *CompressionOptions
	}{
		{"Defaults", &CompressionOptions{}, &CompressionOptions{}},
		{"ServerNoContextTakeover", &CompressionOptions{ServerNoContextTakeover: true}, &CompressionOptions{}},
		{"ClientAsksNoContextTakeover", &CompressionOptions{}, &CompressionOptions{ServerNoContextTakeover: true, ClientNoContextTakeover: true}},
		{"SmallWindows", &CompressionOptions{ServerMaxWindowBits: 9, ClientMaxWindowBits: 8, Level: 9}, &CompressionOptions{Threshold: -1}},
		{"ClientWindow10", &CompressionOptions{}, &CompressionOptions{ClientMaxWindowBits: 10, ServerMaxWindowBits: 12, Level: 5}},
	}
	msgs := deflateMessages()
	for _, o := range opts {
		t.Run(o.name, func(t *testing.T) {
			srv, cli := deflateConns(t, &ServerConfig{Compression: o.srv}, &DialConfig{Compression: o.cli})
			if srv.pmd == nil || cli.pmd == nil {
				t.Fatalf("compression not negotiated: %q", cli.Extensions())
			}
			sp, _ := srv.Compression()
			cp, _ := cli.Compression()
			t.Logf("negotiated %q: server %+v client %+v", srv.Extensions(), sp, cp)
			// The server echoes with ReadMessage/WriteMessage; the client writes and reads.
			echo := async(func() error {
				for {
					op, p, err := srv.readMessage()
					if err == nil {
						err = srv.writeMessage(op, p)
					}
					if err != nil {
						return err
					}
				}
			})
			for i, m := range msgs {
				op := OpText
				if i == 7 {
					op = OpBinary
				}
				if err := cli.writeMessage(op, m); err != nil {
					t.Fatal(err)
				}
				var got []byte
				var gop OpCode
				var err error
				gop, got, err = cli.readMessage()
				if err != nil || gop != op || !bytes.Equal(got, m) {
					t.Fatalf("message %d (%d bytes): got %v %d bytes, %v", i, len(m), gop, len(got), err)
				}
			}
			cli.Close(StatusNormalClosure, "")
			if err := waitErr(t, echo, 5*time.Second, "echo"); CloseStatus(err) != StatusNormalClosure {
				t.Errorf("echo ended with %v", err)
			}
		})
	}
}

// TestDeflate_Negotiation_Server: the answer to each offer and the parameters in force.
// offerCase is a server's options, a client's offer and the answer expected.
type offerCase struct {
	name   string
	opts   CompressionOptions
	offer  string // Sec-WebSocket-Extensions of the request
	answer string // "" when declined
}

func TestDeflate_Negotiation_Server(t *testing.T) {
	cases := []offerCase{
		{"Bare", CompressionOptions{}, "permessage-deflate", "permessage-deflate"},
		{"BareClientMaxWindowBits", CompressionOptions{}, "permessage-deflate; client_max_window_bits", "permessage-deflate"},
		{"ClientMaxWindowBitsBareWithServerLimit", CompressionOptions{ClientMaxWindowBits: 10}, "permessage-deflate; client_max_window_bits", "permessage-deflate; client_max_window_bits=10"},
		{"ClientLimitNotOfferedIgnored", CompressionOptions{ClientMaxWindowBits: 10}, "permessage-deflate", "permessage-deflate"},
		{"ClientMaxWindowBitsValue", CompressionOptions{}, "permessage-deflate; client_max_window_bits=9", "permessage-deflate; client_max_window_bits=9"},
		{"ClientMaxWindowBitsSmallerOfBoth", CompressionOptions{ClientMaxWindowBits: 11}, "permessage-deflate; client_max_window_bits=12", "permessage-deflate; client_max_window_bits=11"},
		{"ServerMaxWindowBits", CompressionOptions{}, "permessage-deflate; server_max_window_bits=10", "permessage-deflate; server_max_window_bits=10"},
		{"ServerMaxWindowBits15Confirmed", CompressionOptions{}, "permessage-deflate; server_max_window_bits=15", "permessage-deflate; server_max_window_bits=15"},
		{"ServerMaxWindowBitsConfigured", CompressionOptions{ServerMaxWindowBits: 9}, "permessage-deflate; server_max_window_bits=12", "permessage-deflate; server_max_window_bits=9"},
		{"ServerLimitUnasked", CompressionOptions{ServerMaxWindowBits: 12}, "permessage-deflate", "permessage-deflate; server_max_window_bits=12"},
		{"ServerNoContextTakeoverAsked", CompressionOptions{}, "permessage-deflate; server_no_context_takeover", "permessage-deflate; server_no_context_takeover"},
		{"ServerNoContextTakeoverConfigured", CompressionOptions{ServerNoContextTakeover: true}, "permessage-deflate", "permessage-deflate; server_no_context_takeover"},
		{"ClientNoContextTakeoverEchoed", CompressionOptions{}, "permessage-deflate; client_no_context_takeover", "permessage-deflate; client_no_context_takeover"},
		{"ClientNoContextTakeoverRequired", CompressionOptions{ClientNoContextTakeover: true}, "permessage-deflate", "permessage-deflate; client_no_context_takeover"},
		{"AllFour", CompressionOptions{}, "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=8; client_max_window_bits=8",
			"permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=8; client_max_window_bits=8"},
		{"QuotedValue", CompressionOptions{}, `permessage-deflate; server_max_window_bits="10"`, "permessage-deflate; server_max_window_bits=10"},
		{"CaseInsensitiveName", CompressionOptions{}, "Permessage-Deflate", "permessage-deflate"},
		{"FirstAcceptableOfSeveral", CompressionOptions{}, "permessage-deflate; server_max_window_bits=7, permessage-deflate; foo, permessage-deflate; client_max_window_bits, permessage-deflate; server_no_context_takeover", "permessage-deflate"},
		{"SeveralHeaderLines", CompressionOptions{}, "x-other\npermessage-deflate; client_no_context_takeover", "permessage-deflate; client_no_context_takeover"},
	}
	// Offers declined with the default options: the answer is "".
	for _, d := range []struct{ name, offer string }{
		{"DeclineUnknownParam", "permessage-deflate; foo"},
		{"DeclineDuplicate", "permessage-deflate; server_no_context_takeover; server_no_context_takeover"},
		{"DeclineDuplicateBits", "permessage-deflate; client_max_window_bits; client_max_window_bits=10"},
		{"DeclineServerBitsBare", "permessage-deflate; server_max_window_bits"},
		{"DeclineServerBits7", "permessage-deflate; server_max_window_bits=7"},
		{"DeclineServerBits16", "permessage-deflate; server_max_window_bits=16"},
		{"DeclineClientBitsLeadingZero", "permessage-deflate; client_max_window_bits=09"},
		{"DeclineClientBitsSign", "permessage-deflate; client_max_window_bits=+9"},
		{"DeclineFlagWithValue", "permessage-deflate; client_no_context_takeover=1"},
		{"OtherExtensionOnly", "x-webkit-deflate-frame"},
	} {
		cases = append(cases, offerCase{d.name, CompressionOptions{}, d.offer, ""})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			for _, l := range strings.Split(tc.offer, "\n") {
				req.Header.Add("Sec-WebSocket-Extensions", l)
			}
			cfg := &ServerConfig{Compression: &tc.opts}
			accepted, rsv, pmd := cfg.negotiateExtensions(req, ParseExtensions(req.Header))
			got := FormatExtensions(accepted)
			if got != tc.answer {
				t.Fatalf("answer %q, want %q", got, tc.answer)
			}
			if (pmd != nil) != (tc.answer != "") || (rsv == RSV1) != (tc.answer != "") {
				t.Fatalf("state %v rsv %#x for answer %q", pmd != nil, rsv, tc.answer)
			}
			if tc.answer == "" {
				return
			}
			// Our client, had it offered the same, accepts the answer with the same parameters.
			back, err := (&CompressionOptions{}).check(accepted[0])
			if err != nil {
				t.Fatalf("answer does not parse: %v", err)
			}
			if back != pmd.params {
				t.Errorf("server params %+v, answer says %+v", pmd.params, back)
			}
		})
	}
}

// TestDeflate_Negotiation_Extensions: permessage-deflate offers are answered by
// Compression, the rest go to the Extensions negotiator.
func TestDeflate_Negotiation_Extensions(t *testing.T) {
	var seen []ExtensionOffer
	cfg := &ServerConfig{
		Compression: &CompressionOptions{},
		Extensions: func(r *http.Request, offers []ExtensionOffer) ([]ExtensionOffer, byte) {
			seen = offers
			return []ExtensionOffer{{Name: "x-test"}}, RSV2
		},
	}
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("Sec-WebSocket-Extensions", "permessage-deflate; foo, x-test, permessage-deflate")
	accepted, rsv, pmd := cfg.negotiateExtensions(req, ParseExtensions(req.Header))
	if FormatExtensions(accepted) != "permessage-deflate, x-test" || rsv != RSV1|RSV2 || pmd == nil {
		t.Fatalf("accepted %q rsv %#x", FormatExtensions(accepted), rsv)
	}
	if FormatExtensions(seen) != "x-test" {
		t.Errorf("negotiator saw %q", FormatExtensions(seen))
	}
}

// TestDeflate_Negotiation_Client: the offer for each option, and which answers are refused.
func TestDeflate_Negotiation_Client(t *testing.T) {
	offers := []struct {
		opts CompressionOptions
		want string
	}{
		{CompressionOptions{}, "permessage-deflate; client_max_window_bits"},
		{CompressionOptions{ServerNoContextTakeover: true, ClientNoContextTakeover: true, ServerMaxWindowBits: 10, ClientMaxWindowBits: 9},
			"permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=9"},
		{CompressionOptions{ServerMaxWindowBits: 15, ClientMaxWindowBits: 99}, "permessage-deflate; client_max_window_bits"},
	}
	for _, o := range offers {
		if got := o.opts.offer().String(); got != o.want {
			t.Errorf("offer for %+v = %q, want %q", o.opts, got, o.want)
		}
	}

	cases := []struct {
		name   string
		opts   CompressionOptions
		answer string
		want   *DeflateParams // nil: refused
	}{
		{"Bare", CompressionOptions{}, "permessage-deflate", &defaultParams},
		{"AllFour", CompressionOptions{}, "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=9",
			&DeflateParams{true, true, 10, 9}},
		{"ClientNoContextTakeoverOurs", CompressionOptions{ClientNoContextTakeover: true}, "permessage-deflate", &DeflateParams{false, true, 15, 15}},
		{"ClientWindowOursKept", CompressionOptions{ClientMaxWindowBits: 10}, "permessage-deflate", &DeflateParams{false, false, 15, 10}},
		{"ServerNoContextTakeoverConfirmed", CompressionOptions{ServerNoContextTakeover: true}, "permessage-deflate; server_no_context_takeover", &DeflateParams{true, false, 15, 15}},
		{"ServerWindowConfirmedSmaller", CompressionOptions{ServerMaxWindowBits: 10}, "permessage-deflate; server_max_window_bits=9", &DeflateParams{false, false, 9, 15}},
		{"RefuseServerNoContextTakeoverMissing", CompressionOptions{ServerNoContextTakeover: true}, "permessage-deflate", nil},
		{"RefuseServerWindowMissing", CompressionOptions{ServerMaxWindowBits: 10}, "permessage-deflate", nil},
		{"RefuseServerWindowLarger", CompressionOptions{ServerMaxWindowBits: 10}, "permessage-deflate; server_max_window_bits=11", nil},
		{"RefuseClientWindowLarger", CompressionOptions{ClientMaxWindowBits: 10}, "permessage-deflate; client_max_window_bits=11", nil},
		{"RefuseClientWindowBare", CompressionOptions{}, "permessage-deflate; client_max_window_bits", nil},
		{"RefuseUnknown", CompressionOptions{}, "permessage-deflate; foo=1", nil},
		{"RefuseDuplicate", CompressionOptions{}, "permessage-deflate; client_no_context_takeover; client_no_context_takeover", nil},
		{"RefuseBadBits", CompressionOptions{}, "permessage-deflate; server_max_window_bits=16", nil},
		{"RefuseTwice", CompressionOptions{}, "permessage-deflate, permessage-deflate", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &DialConfig{Compression: &tc.opts}
			rest, pmd, err := cfg.checkDeflateAnswer(ParseExtensions(http.Header{"Sec-Websocket-Extensions": {tc.answer}}))
			if tc.want == nil {
				if err == nil {
					t.Fatalf("answer %q accepted", tc.answer)
				}
				return
			}
			if err != nil || len(rest) != 0 || pmd == nil {
				t.Fatalf("answer %q: %v", tc.answer, err)
			}
			if pmd.params != *tc.want {
				t.Errorf("params %+v, want %+v", pmd.params, *tc.want)
			}
		})
	}
}

// TestDeflate_DialRefusesBadAnswer: a server answer outside the offer fails the
// handshake with ErrBadExtension.
func TestDeflate_DialRefusesBadAnswer(t *testing.T) {
	for _, answer := range []string{
		"permessage-deflate; server_max_window_bits=12",
		"permessage-deflate; client_max_window_bits",
		"permessage-deflate; mystery",
	} {
		t.Run(answer, func(t *testing.T) {
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if got := r.Header.Get("Sec-WebSocket-Extensions"); got != "x-a, permessage-deflate; server_max_window_bits=10; client_max_window_bits" {
					t.Errorf("offer %q", got)
				}
				Upgrade(w, r, &ServerConfig{Extensions: func(*http.Request, []ExtensionOffer) ([]ExtensionOffer, byte) {
					return ParseExtensions(http.Header{"Sec-Websocket-Extensions": {answer}}), RSV1
				}})
			}))
			defer ts.Close()
			_, _, err := Dial(context.Background(), ts.URL, &DialConfig{
				Extensions:  []ExtensionOffer{{Name: "x-a"}, {Name: "permessage-deflate"}},
				Compression: &CompressionOptions{ServerMaxWindowBits: 10},
			})
			if !errors.Is(err, ErrBadExtension) {
				t.Fatalf("Dial: %v, want ErrBadExtension", err)
			}
		})
	}
}

// TestDeflate_PassthroughInspect: a Conn whose permessage-deflate comes from the
// caller's own hooks (a proxy relaying the answer) leaves payloads compressed at
// every level, and Inflate decodes them with the context.
func TestDeflate_PassthroughInspect(t *testing.T) {
	srv, cli := deflateConns(t,
		&ServerConfig{Extensions: func(_ *http.Request, o []ExtensionOffer) ([]ExtensionOffer, byte) {
			return []ExtensionOffer{{Name: "permessage-deflate", Params: []ExtensionParam{{Name: "client_max_window_bits", Value: "12"}}}}, RSV1
		}},
		&DialConfig{Compression: &CompressionOptions{Threshold: -1}})
	if _, ok := srv.Compression(); !ok {
		t.Fatal("relayed permessage-deflate not recognised")
	}
	if p, _ := srv.Compression(); p != (DeflateParams{ClientMaxWindowBits: 12, ServerMaxWindowBits: 15}) {
		t.Fatalf("params %+v", p)
	}
	go func() {
		cli.writeMessage(OpText, []byte("Hello Hello"))
		cli.writeMessage(OpText, []byte("Hello Hello"))
	}()
	for range 2 {
		_, raw, err := srv.readMessage() // stays compressed
		if err != nil {
			t.Fatal(err)
		}
		if string(raw) == "Hello Hello" {
			t.Fatal("message level inflated a relayed extension")
		}
		out, err := srv.inflate(nil, raw)
		if err != nil || string(out) != "Hello Hello" {
			t.Fatalf("Inflate = %q, %v", out, err)
		}
	}
}

// heapInUse returns the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestDeflate_MemoryPerConnection measures what an idle server connection holds
// after one compressed message each way, with and without context takeover.
func TestDeflate_MemoryPerConnection(t *testing.T) {
	if testing.Short() {
		t.Skip("memory measure")
	}
	const n = 64
	t.Logf("deflateState itself: %d bytes (the measures below are ±1 KiB)", unsafe.Sizeof(deflateState{}))
	msg := jsonPayload(2 << 10)
	cases := []struct {
		name string
		opts *CompressionOptions
		max  int64 // bytes per connection, over the Conn without compression
	}{
		{"NoContextTakeover", &CompressionOptions{ServerNoContextTakeover: true, ClientNoContextTakeover: true}, 2 << 10},
		{"ReceiveContextOnly", &CompressionOptions{ServerNoContextTakeover: true}, 40 << 10},
		{"ReceiveContextWindow10", &CompressionOptions{ServerNoContextTakeover: true, ClientMaxWindowBits: 10}, 4 << 10},
		{"ContextTakeover", &CompressionOptions{}, 2 << 20},
		{"ContextTakeoverLevel9", &CompressionOptions{Level: 9}, 3 << 20},
	}
	measure := func(t *testing.T, o *CompressionOptions) int64 {
		conns := make([]*Conn, n)
		base := heapInUse()
		for i := range conns {
			c, peer := memPair(t, o)
			go peer.writeMessage(OpText, msg)
			if _, _, err := c.readMessage(); err != nil {
				t.Fatal(err)
			}
			go c.writeMessage(OpText, msg)
			if _, _, err := peer.readMessage(); err != nil {
				t.Fatal(err)
			}
			peer.CloseNow()
			conns[i] = c
		}
		per := (int64(heapInUse()) - int64(base)) / n
		runtime.KeepAlive(conns)
		return per
	}
	measure(t, nil) // warm up
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			off := measure(t, nil)
			per := measure(t, tc.opts) - off
			t.Logf("permessage-deflate state held by an idle connection: %.1f KiB (a Conn without it: %.1f KiB)", float64(per)/1024, float64(off)/1024)
			if per > tc.max {
				t.Errorf("%d bytes per connection, want at most %d", per, tc.max)
			}
		})
	}
}

// memPair is a server Conn and a client Conn over net.Pipe, with opts
// negotiated against a default client offer (nil: off).
func memPair(t testing.TB, o *CompressionOptions) (*Conn, *Conn) {
	a, b := net.Pipe()
	var scfg, ccfg connConfig
	if o != nil {
		p, _, _ := o.accept(ExtensionOffer{Name: PermessageDeflate, Params: []ExtensionParam{{Name: pClientBits}}})
		scfg = connConfig{rsvAllowed: RSV1, pmd: newDeflateState(p, false, o)}
		ccfg = connConfig{rsvAllowed: RSV1, pmd: newDeflateState(p, true, &CompressionOptions{})}
	}
	s := newConn(a, nil, false, scfg)
	c := newConn(b, nil, true, ccfg)
	t.Cleanup(func() { s.CloseNow() }) // the peer is closed by the caller and must not stay reachable
	return s, c
}

// countingSink is a connection that drops what is written and counts it.
type countingSink struct {
	memConn
	n int64
}

func (c *countingSink) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// benchModes are the sending configurations compared by the benchmarks.
var benchModes = []struct {
	name string
	p    *DeflateParams // nil: no compression
}{
	{"plain", nil},
	{"no_context_takeover", &DeflateParams{ServerNoContextTakeover: true, ClientNoContextTakeover: true, ServerMaxWindowBits: 15, ClientMaxWindowBits: 15}},
	{"context_takeover", &defaultParams},
}

// BenchmarkDeflateWrite measures WriteMessage (server role) of JSON-like text
// with and without compression; "ratio" is wire bytes over payload bytes.
func BenchmarkDeflateWrite(b *testing.B) {
	for _, size := range []int{1 << 10, 64 << 10} {
		msgs := make([][]byte, max(16, 1<<20/size)) // the cycle exceeds the window: no message repeats within it
		for i := range msgs {
			msgs[i] = jsonPayload(size)
		}
		for _, m := range benchModes {
			b.Run(fmt.Sprintf("%s/%dKiB", m.name, size>>10), func(b *testing.B) {
				var cfg connConfig
				if m.p != nil {
					cfg = deflateCfg(*m.p, false, nil)
				}
				sink := &countingSink{memConn: memConn{r: strings.NewReader("")}}
				c := newConn(sink, nil, false, cfg)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				var sent int64
				for i := 0; b.Loop(); i++ {
					if err := c.writeMessage(OpText, msgs[i%len(msgs)]); err != nil {
						b.Fatal(err)
					}
					sent += int64(size)
				}
				b.ReportMetric(float64(sink.n)/float64(sent), "ratio")
			})
		}
	}
}

// BenchmarkDeflateRead measures ReadMessage (server role) of the same messages,
// compressed by a fresh compressor, looped from memory.
func BenchmarkDeflateRead(b *testing.B) {
	for _, size := range []int{1 << 10, 64 << 10} {
		msg := jsonPayload(size)
		var z bytes.Buffer
		w, _ := stdflate.NewWriter(&z, 1)
		w.Write(msg)
		w.Flush()
		compressed := z.Bytes()[:z.Len()-4]
		for _, m := range benchModes {
			b.Run(fmt.Sprintf("%s/%dKiB", m.name, size>>10), func(b *testing.B) {
				frame := rawFrame(true, 0, OpText, true, msg)
				var cfg connConfig
				if m.p != nil {
					cfg = deflateCfg(*m.p, false, nil)
					frame = compressedFrame(OpText, compressed)
				}
				c := newConn(&memConn{r: &loopReader{data: frame}}, nil, false, cfg)
				buf := make([]byte, 0, size)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					if _, p, err := c.appendMessage(buf[:0]); err != nil || len(p) != size {
						b.Fatal(len(p), err)
					}
				}
				b.ReportMetric(float64(len(frame))/float64(size), "ratio")
			})
		}
	}
}

// TestDeflate_CloseInsideCompressedMessage: a close between the fragments of a
// compressed message ends the read with the peer's close, as for plain messages.
func TestDeflate_CloseInsideCompressedMessage(t *testing.T) {
	for _, mode := range []string{"ReadMessage"} {
		t.Run(mode, func(t *testing.T) {
			c, raw := tcpPair(t, false, deflateCfg(defaultParams, false, nil))
			go raw.Write(concat(rawFrame(false, RSV1, OpText, true, deflatedHello[:3]), clientFrame(OpClose, closeBody(4001, "bye"))))
			var err error
			_, _, err = c.readMessage()
			var ce *CloseError
			if !errors.As(err, &ce) || ce.Code != 4001 || ce.Reason != "bye" {
				t.Fatalf("read: %v, want the peer's close 4001", err)
			}
			if code, _, _ := expectClose(t, raw, 5*time.Second); code != 4001 {
				t.Errorf("close answered with %v", code)
			}
		})
	}
}
