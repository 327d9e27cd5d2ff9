package wsmw

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"
)

const (
	writers     = 8
	perWriter   = 200
	textPattern = "κόσμε 😀 ascii \u0800\U0010ffff "
)

// concurrentPayload is the deterministic payload of message i of writer g: a
// "g:i:" prefix then a pattern of some length (text: whole runes only).
func concurrentPayload(g, i int, text bool) []byte {
	n := (g*131 + i*71) % 3000
	if i%50 == 0 {
		n = 0
	}
	p := fmt.Appendf(nil, "%d:%d:", g, i)
	if text {
		prefix := len(p)
		for len(p) < n {
			p = append(p, textPattern...)
		}
		p = p[:max(n, prefix)]
		for !utf8.Valid(p) {
			p = p[:len(p)-1] // cut back to a rune boundary
		}
		return p
	}
	for j := 0; j < n; j++ {
		p = append(p, byte(g*7+i+j))
	}
	return p
}

// concurrentWrite is one writer's job: a mix of whole messages, messages sent as
// fragments (split inside runes) with WriteFrame, and pings. Writers hold msgs
// for a whole message, as a user of the frame API does; pings do not wait.
func concurrentWrite(c *Conn, msgs *sync.Mutex, g int) error {
	for i := 0; i < perWriter; i++ {
		text := i%4 == 0 || i%4 == 2
		op := OpBinary
		if text {
			op = OpText
		}
		p := concurrentPayload(g, i, text)
		msgs.Lock()
		var err error
		if i%4 < 2 {
			err = c.writeMessage(op, p)
		} else {
			err = writeFragments(c, op, p, i)
		}
		msgs.Unlock()
		if err != nil {
			return err
		}
		if i%4 >= 2 {
			if err := c.Ping(fmt.Appendf(nil, "ping %d %d", g, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeFragments sends p as a message of op in fragments of varying sizes.
func writeFragments(c *Conn, op OpCode, p []byte, i int) error {
	for {
		k := min(1+(len(p)*7+i)%700, len(p))
		if err := c.WriteFrame(Header{OpCode: op}, p[:k]); err != nil {
			return err
		}
		op, p = OpContinuation, p[k:]
		if len(p) == 0 {
			return c.WriteFrame(Header{Fin: true, OpCode: op}, nil)
		}
	}
}

// checkConcurrent verifies one received message against what its writer sent and
// the order of that writer's messages.
func checkConcurrent(next []int, op OpCode, p []byte) error {
	var g, i int
	if _, err := fmt.Sscanf(string(p), "%d:%d:", &g, &i); err != nil {
		return fmt.Errorf("message without a g:i: prefix: %q", p[:min(len(p), 20)])
	}
	if g < 0 || g >= writers || i != next[g] {
		return fmt.Errorf("message %d:%d out of order (want %d next)", g, i, next[g])
	}
	next[g]++
	text := i%4 == 0 || i%4 == 2
	wantOp := OpBinary
	if text {
		wantOp = OpText
	}
	if op != wantOp || !bytes.Equal(p, concurrentPayload(g, i, text)) {
		return fmt.Errorf("message %d:%d corrupted: %v, %d bytes", g, i, op, len(p))
	}
	return nil
}

// TestConcurrentWritersClientToServer: 8 goroutines write through a client Conn
// to a server Conn whose reader applies every receive rule; every message must
// arrive intact and in per-writer order, and every ping must be answered.
func TestConcurrentWritersClientToServer(t *testing.T) {
	srv, raw := tcpPair(t, false, connConfig{})
	cli := newConn(raw, nil, true, connConfig{closeTimeout: 2 * time.Second})

	var pings, pongs atomic.Int64
	srv.SetPingHandler(func(p []byte) error {
		pings.Add(1)
		return srv.writeControl(OpPong, p)
	})
	cli.SetPongHandler(func(p []byte) error {
		pongs.Add(1)
		return nil
	})
	cliRead := async(func() error { _, _, err := cli.readMessage(); return err })

	srvRead := async(func() error {
		next := make([]int, writers)
		for n := 0; n < writers*perWriter; n++ {
			op, p, err := srv.readMessage()
			if err != nil {
				return fmt.Errorf("after %d messages: %w", n, err)
			}
			if err := checkConcurrent(next, op, p); err != nil {
				return err
			}
		}
		_, _, err := srv.readMessage()
		var ce *CloseError
		if !errors.As(err, &ce) || ce.Code != StatusNormalClosure {
			return fmt.Errorf("after all messages: %v, want the client's close", err)
		}
		return nil
	})

	var wg sync.WaitGroup
	var msgs sync.Mutex
	errs := make(chan error, writers)
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := concurrentWrite(cli, &msgs, g); err != nil {
				errs <- fmt.Errorf("writer %d: %w", g, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := cli.Close(StatusNormalClosure, "done"); err != nil {
		t.Errorf("Close = %v", err)
	}
	if err := waitErr(t, srvRead, 10*time.Second, "server reader"); err != nil {
		t.Fatal(err)
	}
	err := waitErr(t, cliRead, 5*time.Second, "client reader")
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != StatusNormalClosure {
		t.Errorf("client reader = %v, want the echoed close", err)
	}
	want := int64(writers * perWriter / 2)
	if pings.Load() != want || pongs.Load() != want {
		t.Errorf("pings %d, pongs %d, want %d each", pings.Load(), pongs.Load(), want)
	}
}

// TestConcurrentWritersServerRawVerifier: 8 goroutines write through a server
// Conn; a raw verifier checks every frame's encoding (unmasked, no RSV, control
// frames whole and ≤125 bytes, continuation order) and every message.
func TestConcurrentWritersServerRawVerifier(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			srv, raw := tr.pair(t, false, connConfig{})
			verify := async(func() error {
				next := make([]int, writers)
				var msg []byte
				var msgOp OpCode
				inMsg := false
				pings, msgs := 0, 0
				_ = raw.SetReadDeadline(time.Now().Add(20 * time.Second))
				for {
					h, p, err := readRawFrame(raw)
					if err != nil {
						return fmt.Errorf("after %d messages: %w", msgs, err)
					}
					if h.Masked || h.Rsv != 0 {
						return fmt.Errorf("bad server frame header %+v", h)
					}
					if h.Size() != len(AppendHeader(nil, h)) {
						return fmt.Errorf("header size mismatch %+v", h)
					}
					switch {
					case h.OpCode.IsControl():
						if !h.Fin || h.Length > 125 {
							return fmt.Errorf("bad control frame %+v", h)
						}
						switch h.OpCode {
						case OpPing:
							pings++
						case OpClose:
							code, _, err := ParseClosePayload(p)
							if err != nil || code != StatusNormalClosure {
								return fmt.Errorf("close %v %v", code, err)
							}
							if inMsg || msgs != writers*perWriter || pings != msgs/2 {
								return fmt.Errorf("close after %d messages, %d pings, in message %v", msgs, pings, inMsg)
							}
							return nil
						default:
							return fmt.Errorf("unexpected %v", h.OpCode)
						}
						continue
					case h.OpCode == OpContinuation:
						if !inMsg {
							return fmt.Errorf("continuation outside a message")
						}
						msg = append(msg, p...)
					default:
						if inMsg {
							return fmt.Errorf("%v frame inside a fragmented message", h.OpCode)
						}
						msgOp, msg = h.OpCode, append(msg[:0], p...)
					}
					inMsg = !h.Fin
					if h.Fin {
						if msgOp == OpText && !utf8.Valid(msg) {
							return fmt.Errorf("invalid UTF-8 text message")
						}
						if err := checkConcurrent(next, msgOp, msg); err != nil {
							return err
						}
						msgs++
					}
				}
			})
			var wg sync.WaitGroup
			var msgLock sync.Mutex
			for g := 0; g < writers; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := concurrentWrite(srv, &msgLock, g); err != nil {
						t.Errorf("writer %d: %v", g, err)
					}
				}()
			}
			wg.Wait()
			if err := srv.sendClose(StatusNormalClosure, ""); err != nil {
				t.Fatal(err)
			}
			if err := waitErr(t, verify, 20*time.Second, "verifier"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestConcurrentWritesDuringClose: writers racing with Close end with
// ErrCloseSent or ErrClosed (or a write error), never a torn frame or a data race.
func TestConcurrentWritesDuringClose(t *testing.T) {
	srv, raw := tcpPair(t, false, connConfig{closeTimeout: 100 * time.Millisecond})
	peer := async(func() error {
		// Read frames until the close, then answer it.
		_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			h, _, err := readRawFrame(raw)
			if err != nil {
				return err
			}
			if h.Masked || h.Rsv != 0 {
				return fmt.Errorf("bad frame %+v", h)
			}
			if h.OpCode == OpClose {
				_, err := raw.Write(clientFrame(OpClose, ""))
				return err
			}
		}
	})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				err := srv.writeMessage(OpBinary, make([]byte, 100*g))
				if err == nil {
					err = srv.Ping(nil)
				}
				if err != nil {
					if !errors.Is(err, ErrCloseSent) && !errors.Is(err, ErrClosed) && !errors.Is(err, net.ErrClosed) {
						t.Errorf("writer %d: unexpected %v", g, err)
					}
					return
				}
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	if err := srv.Close(StatusNormalClosure, ""); err != nil {
		t.Errorf("Close = %v", err)
	}
	wg.Wait()
	if err := waitErr(t, peer, 5*time.Second, "peer"); err != nil {
		t.Errorf("peer: %v", err)
	}
}

// TestReadDeadline: a read deadline in the past makes NextFrame (and the message
// reader) return a timeout net.Error.
func TestReadDeadline(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			c, _ := tr.pair(t, false, connConfig{})
			if err := c.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
				t.Fatal(err)
			}
			err := waitErr(t, async(func() error { _, err := c.nextFrame(); return err }), 2*time.Second, "NextFrame")
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("NextFrame = %v, want a timeout net.Error", err)
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("NextFrame = %v, want os.ErrDeadlineExceeded", err)
			}
		})
		t.Run(tr.name+"/Future", func(t *testing.T) {
			c, _ := tr.pair(t, false, connConfig{})
			_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			start := time.Now()
			_, _, err := c.readMessage()
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("ReadMessage = %v, want a timeout net.Error", err)
			}
			if d := time.Since(start); d < 80*time.Millisecond || d > 2*time.Second {
				t.Errorf("timed out after %v", d)
			}
		})
		t.Run(tr.name+"/MidFrame", func(t *testing.T) {
			c, raw := tr.pair(t, false, connConfig{})
			go raw.Write(clientFrame(OpBinary, "0123456789")[:9])
			_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			_, _, err := c.readMessage()
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("ReadMessage = %v, want a timeout net.Error", err)
			}
		})
	}
}

// TestReadContextCanceled: Read with a cancelled context returns promptly with
// an error matching context.Canceled.
func TestReadContextCanceled(t *testing.T) {
	for _, tr := range transports {
		for _, pre := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/precanceled=%v", tr.name, pre), func(t *testing.T) {
				c, _ := tr.pair(t, false, connConfig{})
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				if pre {
					cancel()
				} else {
					time.AfterFunc(50*time.Millisecond, cancel)
				}
				start := time.Now()
				err := waitErr(t, async(func() error { _, _, err := c.Read(ctx, nil); return err }), 2*time.Second, "Read")
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("Read = %v, want context.Canceled", err)
				}
				if d := time.Since(start); d > time.Second {
					t.Errorf("Read took %v", d)
				}
			})
		}
	}
	t.Run("Deadline", func(t *testing.T) {
		c, _ := tcpPair(t, false, connConfig{})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, _, err := c.Read(ctx, nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Read = %v, want context.DeadlineExceeded", err)
		}
	})
	t.Run("NotCanceled", func(t *testing.T) {
		c, raw := tcpPair(t, false, connConfig{})
		go raw.Write(clientFrame(OpText, "hello"))
		op, p, err := c.Read(context.Background(), nil)
		if err != nil || op != MessageText || string(p) != "hello" {
			t.Fatalf("Read = %v %q %v", op, p, err)
		}
	})
}

// TestWriteContextCanceled: Write to a peer that never reads returns promptly
// once the context is cancelled, with an error matching context.Canceled.
func TestWriteContextCanceled(t *testing.T) {
	for _, tr := range transports {
		for _, client := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/client=%v", tr.name, client), func(t *testing.T) {
				c, _ := tr.pair(t, client, connConfig{})
				size := 64 << 20 // far more than the socket buffers
				if tr.name == "pipe" {
					size = 1 << 20 // net.Pipe has no buffer at all
				}
				big := make([]byte, size)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				time.AfterFunc(100*time.Millisecond, cancel)
				start := time.Now()
				err := waitErr(t, async(func() error { return c.Write(ctx, MessageBinary, big) }), 5*time.Second, "Write")
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("Write = %v, want context.Canceled", err)
				}
				if d := time.Since(start); d > 2*time.Second {
					t.Errorf("Write took %v", d)
				}
				// The stream is broken: later writes fail.
				if err := c.writeMessage(OpText, []byte("x")); err == nil {
					t.Error("WriteMessage after a cancelled Write succeeded")
				}
			})
		}
	}
	t.Run("NotCanceled", func(t *testing.T) {
		c, raw := tcpPair(t, false, connConfig{})
		if err := c.Write(context.Background(), MessageBinary, []byte("hi")); err != nil {
			t.Fatal(err)
		}
		_ = raw.SetReadDeadline(time.Now().Add(2 * time.Second))
		h, p, err := readRawFrame(raw)
		if err != nil || h.OpCode != OpBinary || string(p) != "hi" {
			t.Fatalf("peer got %+v %q %v", h, p, err)
		}
	})
}
