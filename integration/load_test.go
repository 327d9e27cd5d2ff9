package integration

// Load tests through the proxy with gorilla/websocket clients and upstreams:
// many concurrent sessions, every message checked (exactly once, in order,
// byte-identical) and the Prometheus message and byte counters checked to the
// unit; and a graceful shutdown under load, where no message the upstream
// echoed may be lost before the 1012 close.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgate/wsgate/proxy"
)

// sizeCycle are the payload sizes the sessions cycle through.
var sizeCycle = []int{16, 200, 1000, 4000, 100, 9000, 0, 60}

// seqHeader is the length of a message's "session:seq|" prefix.
const seqHeader = 16

// parseSeq returns the session and sequence numbers of a message (-1 if malformed).
func parseSeq(p []byte) (int, int) {
	if len(p) < seqHeader || p[7] != ':' || p[15] != '|' {
		return -1, -1
	}
	s, err1 := strconv.Atoi(string(p[:7]))
	seq, err2 := strconv.Atoi(string(p[8:15]))
	if err1 != nil || err2 != nil {
		return -1, -1
	}
	return s, seq
}

// seqMessage is message seq of session s: its type alternates, its payload
// starts with the session and sequence numbers (ASCII) and is padded to its size.
func seqMessage(s, seq int) (int, []byte) {
	n := sizeCycle[(s+seq)%len(sizeCycle)]
	p := make([]byte, 0, max(n, seqHeader))
	p = fmt.Appendf(p, "%07d:%07d|", s, seq)
	for i := len(p); i < n; i++ {
		p = append(p, 'a'+byte((i+seq)%26))
	}
	if seq%2 == 0 {
		return websocket.TextMessage, p
	}
	return websocket.BinaryMessage, p
}

// counter returns the value of metric name{direction=dir} in reg.
func counter(t testing.TB, reg *prometheus.Registry, name, dir string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "direction" && l.GetValue() == dir {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("metric %s{direction=%q} not found", name, dir)
	return 0
}

// TestLoadConcurrentSessions: 200 sessions, 200 messages each, through the
// proxy to a gorilla echo upstream. Every echo arrives once, in order,
// byte-identical; the metrics count exactly the messages and bytes forwarded.
func TestLoadConcurrentSessions(t *testing.T) {
	checkLeaks(t)
	const (
		sessions = 200
		perSess  = 200
	)
	reg := prometheus.NewRegistry()
	m, err := proxy.NewMetrics(reg, "loadtest")
	if err != nil {
		t.Fatal(err)
	}
	p, addr := echoFront(t, proxy.Config{Metrics: m})

	var wantBytes int64
	for s := range sessions {
		for seq := range perSess {
			_, msg := seqMessage(s, seq)
			wantBytes += int64(len(msg))
		}
	}

	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := runSession(addr, s, perSess); err != nil {
				errs <- fmt.Errorf("session %d: %w", s, err)
			}
		}()
	}
	wg.Wait()
	d := time.Since(start)
	close(errs)
	n := 0
	for err := range errs {
		if n++; n <= 5 {
			t.Error(err)
		}
	}
	if n > 0 {
		t.Fatalf("%d sessions failed", n)
	}
	if !idle(p, 10*time.Second) {
		t.Fatalf("%d sessions still active", p.ActiveSessions())
	}
	total := sessions * perSess
	t.Logf("%d sessions x %d messages echoed in %v: %.0f messages/s each way, %.1f MiB each way",
		sessions, perSess, d.Round(time.Millisecond), float64(total)/d.Seconds(), float64(wantBytes)/(1<<20))

	for _, dir := range []string{"up", "down"} {
		if got := counter(t, reg, "loadtest_messages_total", dir); got != float64(total) {
			t.Errorf("messages_total{direction=%q} = %v, want %d", dir, got, total)
		}
		if got := counter(t, reg, "loadtest_bytes_total", dir); got != float64(wantBytes) {
			t.Errorf("bytes_total{direction=%q} = %v, want %d", dir, got, wantBytes)
		}
	}
}

// runSession sends n messages while reading the echoes, checks them, and closes.
func runSession(addr string, s, n int) error {
	c, _, err := dial(addr, "/load/"+strconv.Itoa(s))
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	werr := make(chan error, 1)
	go func() {
		c.SetWriteDeadline(time.Now().Add(60 * time.Second))
		for seq := range n {
			mt, msg := seqMessage(s, seq)
			if err := c.WriteMessage(mt, msg); err != nil {
				werr <- err
				return
			}
		}
		werr <- nil
	}()
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	for seq := range n {
		mt, got, err := c.ReadMessage()
		if err != nil {
			return fmt.Errorf("reading echo %d: %w", seq, err)
		}
		wantType, want := seqMessage(s, seq)
		if mt != wantType || !bytes.Equal(got, want) {
			gs, gq := parseSeq(got)
			return fmt.Errorf("echo %d: got type %d, session %d seq %d, %d bytes; want type %d, %d bytes", seq, mt, gs, gq, len(got), wantType, len(want))
		}
	}
	if err := <-werr; err != nil {
		return err
	}
	return closeClean(c)
}

// echoRecorder is a gorilla echo upstream that records, per session path, the
// sequence numbers it echoed (the echo handed to the kernel).
type echoRecorder struct {
	mu     sync.Mutex
	echoed map[string][]int
}

func (l *echoRecorder) handler() http.Handler {
	upg := websocket.Upgrader{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := upg.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := c.WriteMessage(mt, p); err != nil {
				return
			}
			l.mu.Lock()
			_, seq := parseSeq(p)
			l.echoed[r.URL.Path] = append(l.echoed[r.URL.Path], seq)
			l.mu.Unlock()
		}
	})
}

// TestLoadGracefulShutdown: sessions stream messages when the proxy shuts down.
// Each client gets 1012, and every message the upstream echoed reaches the
// client before the close: the client's received sequence is a gap-free prefix
// of what it sent, as long as what the upstream echoed.
func TestLoadGracefulShutdown(t *testing.T) {
	checkLeaks(t)
	const sessions = 20
	rec := &echoRecorder{echoed: make(map[string][]int)}
	upSrv := httptest.NewServer(rec.handler())
	t.Cleanup(upSrv.Close)
	p, addr := proxyFront(t, proxy.Config{Upstreams: []string{upSrv.URL}, CloseTimeout: 5 * time.Second}, nil) // an upstream silent that long during the drain is gone

	type result struct {
		received []int
		sent     int
		code     int
		err      error
	}
	results := make([]result, sessions)
	var streaming sync.WaitGroup // every session has had an echo
	var wg sync.WaitGroup
	var totalEchoes atomic.Int64
	streaming.Add(sessions)
	for s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := &results[s]
			c, _, err := dial(addr, "/drain/"+strconv.Itoa(s))
			if err != nil {
				res.err = err
				streaming.Done()
				return
			}
			defer c.Close()
			stop := make(chan struct{})
			var sent atomic.Int64
			wdone := make(chan struct{})
			go func() {
				defer close(wdone)
				for seq := 0; ; seq++ {
					select {
					case <-stop:
						return
					default:
					}
					mt, msg := seqMessage(s, seq)
					c.SetWriteDeadline(time.Now().Add(5 * time.Second))
					if err := c.WriteMessage(mt, msg); err != nil {
						return
					}
					sent.Add(1)
					if seq%8 == 7 {
						time.Sleep(time.Millisecond) // keep the load moderate
					}
				}
			}()
			first := true
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			for {
				_, got, err := c.ReadMessage()
				if err != nil {
					var ce *websocket.CloseError
					if errors.As(err, &ce) {
						res.code = ce.Code
					} else {
						res.err = err
					}
					break
				}
				gs, seq := parseSeq(got)
				if gs != s {
					res.err = fmt.Errorf("malformed echo %q", got[:min(len(got), 20)])
					break
				}
				res.received = append(res.received, seq)
				totalEchoes.Add(1)
				if first {
					first = false
					streaming.Done()
				}
			}
			if first {
				streaming.Done()
			}
			close(stop)
			<-wdone
			res.sent = int(sent.Load())
		}()
	}
	streaming.Wait()
	time.Sleep(200 * time.Millisecond) // let the sessions stream for a while
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v (%d sessions left)", err, p.ActiveSessions())
	}
	t.Logf("shutdown took %v; %d echoes received before it finished", time.Since(start).Round(time.Millisecond), totalEchoes.Load())
	wg.Wait()

	rec.mu.Lock()
	defer rec.mu.Unlock()
	lost := 0
	for s, res := range results {
		if res.err != nil {
			t.Errorf("session %d: %v", s, res.err)
			continue
		}
		if res.code != 1012 {
			t.Errorf("session %d: close code %d, want 1012", s, res.code)
		}
		for i, seq := range res.received {
			if seq != i {
				t.Errorf("session %d: echo %d is seq %d: the received sequence has a gap or is out of order", s, i, seq)
				break
			}
		}
		echoed := rec.echoed["/drain/"+strconv.Itoa(s)]
		for i, seq := range echoed {
			if seq != i {
				t.Errorf("session %d: upstream echo %d is seq %d", s, i, seq)
				break
			}
		}
		if len(res.received) != len(echoed) {
			lost += len(echoed) - len(res.received)
			t.Errorf("session %d: the upstream echoed %d messages but the client received %d before the close (sent %d)",
				s, len(echoed), len(res.received), res.sent)
		}
	}
	if lost > 0 {
		var sb strings.Builder
		fmt.Fprintf(&sb, "%d echoed messages in total were lost at shutdown", lost)
		t.Error(sb.String())
	}
}
