package proxy

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/wsmw"
)

// The innocent leg hears at once: when one leg of a session breaks the rules,
// the other leg's close goes out within milliseconds, while the offender's
// own close handshake runs on in the background for at most CloseTimeout.

// innocentCloseTimeout is the CloseTimeout of these tests: long, so that an
// innocent leg waiting for the offender's handshake would show.
const innocentCloseTimeout = 5 * time.Second

// hearsWithin is how soon after the proxy can know of an offence the innocent
// leg must have its close (and the offender its own): generous for a loaded
// machine, and a tenth of innocentCloseTimeout.
const hearsWithin = 500 * time.Millisecond

// hangUpAfter is when an offender that is not patient hangs up, after its offence.
const hangUpAfter = 1500 * time.Millisecond

// offence is one way a leg breaks the rules, played by a raw peer on either side.
type offence struct {
	name string
	cfg  Config // what the case adds to the base config
	// commit sends the offence on c, the offender's connection. The offender
	// sends no close afterwards and answers nothing.
	commit func(c *testkit.Conn)
	after  time.Duration // how long the proxy needs to notice the offence
	deaf   bool          // the offender reads nothing until the innocent peer has heard
	flood  bool          // the innocent peer writes all along (to a deaf offender)
	code   int           // the offender's close: 0 when it is dropped without one
	reason string
	// patient: the offender waits for the proxy to end its connection, which
	// must be about CloseTimeout after the offence; otherwise it hangs up
	// (without a close) hangUpAfter the offence, and its connection must
	// still be open then: its close handshake was not cut.
	patient bool
	blame   string // what the innocent peer is told the offender did ("violated the protocol"...)
	// The session's end as logged and counted: endCode, and "proxy" or the offender.
	endCode  int
	endProxy bool
}

// refusedBy is an inspector closing the session (1008 "refused") on any
// message of 3 bytes, from either side.
var refusedBy = Chain{testInspector{inspect: func(m *Message) Verdict {
	if m.Length == 3 {
		return Verdict{Action: Close, Reason: "refused"}
	}
	return Verdict{Action: Pass}
}}}

// announce sends the header of a binary frame of n bytes, and none of its payload.
func announce(c *testkit.Conn, n int64) {
	c.WriteChopped(wsmw.AppendHeader(nil, wsmw.Header{Fin: true, OpCode: wsmw.OpBinary, Masked: c.Client, Mask: testkit.RandomKey(), Length: n}), 0)
}

var offences = []offence{
	{name: "1002 reserved bits", commit: func(c *testkit.Conn) {
		c.Send(testkit.Frame{Fin: true, Rsv: wsmw.RSV1, Op: wsmw.OpBinary, Payload: []byte("x")})
	}, code: 1002, reason: "reserved bits set without a negotiated extension", blame: "violated the protocol", endCode: 1002, endProxy: true},
	{name: "1007 invalid UTF-8", commit: func(c *testkit.Conn) {
		c.Send(testkit.Frame{Fin: true, Op: wsmw.OpText, Payload: []byte{'a', 0xff, 0xfe}})
	}, code: 1007, reason: "invalid utf-8 in text message", blame: "violated the protocol", endCode: 1007, endProxy: true},
	{name: "1009 one 70,000-byte frame", commit: func(c *testkit.Conn) {
		c.Send(testkit.Binary(testkit.Pattern(70000, false)))
	}, code: 1009, reason: "message too big", blame: "violated the protocol", endCode: 1009, endProxy: true},
	{name: "1009 2 GiB announced then a stall", commit: func(c *testkit.Conn) {
		announce(c, 2<<30)
	}, code: 1009, reason: "message too big", blame: "violated the protocol", endCode: 1009, endProxy: true, patient: true},
	{name: "inspector verdict", cfg: Config{Inspectors: refusedBy}, commit: func(c *testkit.Conn) {
		c.Send(testkit.Text("bad"))
	}, code: 1008, reason: "refused", blame: "message refused", endCode: 1008, endProxy: true},
	{name: "write timeout", cfg: Config{WriteTimeout: 300 * time.Millisecond}, commit: func(*testkit.Conn) {},
		// The stalled write fails WriteTimeout after the buffers between
		// filled, which takes a while on a loaded machine; still well within
		// CloseTimeout.
		after: 300*time.Millisecond + 2*time.Second, deaf: true, flood: true, blame: "went away", endCode: 1006},
	{name: "keepalive", cfg: Config{PingInterval: 200 * time.Millisecond, PingTimeout: 100 * time.Millisecond}, commit: func(*testkit.Conn) {},
		after: 300 * time.Millisecond, blame: "went away", endCode: 1006},
}

// TestInnocentLegHearsAtOnce: for each offence by either leg, the other leg
// gets its close (1014 to a client, 1001 to an upstream, saying what the
// offender did) within hearsWithin of the moment the proxy could know, and
// its connection ends at once, while the offender, which never answers, gets
// its own code at once and its connection stays open for its close handshake
// (until CloseTimeout, for the patient ones; a dropped offender is closed at
// once, without a close); the session's log line and metrics tell its end,
// and no goroutine outlives it.
func TestInnocentLegHearsAtOnce(t *testing.T) {
	testkit.CheckGoroutines(t) // after every parallel case's cleanups
	for _, side := range []string{initiatorClient, initiatorUpstream} {
		for _, o := range offences {
			t.Run(side+"/"+o.name, func(t *testing.T) {
				t.Parallel()
				checkInnocent(t, side, o)
			})
		}
	}
}

// heard is what a raw peer saw of the end of its session: the close it got
// (nil if none) and when, and when its connection ended.
type heard struct {
	close   *testkit.Frame
	closeAt time.Time
	endAt   time.Time
	ended   bool  // the connection ended (EOF or reset), rather than the time running out
	err     error // what ended the innocent peer's reading before a close, if anything
}

// checkInnocent runs offence o by the offender leg ("client" or "upstream")
// of a session between raw peers, and checks what each leg saw.
func checkInnocent(t *testing.T, offender string, o offence) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg, "t")
	if err != nil {
		t.Fatal(err)
	}
	cfg := o.cfg
	cfg.CloseTimeout, cfg.MaxMessageSize, cfg.Metrics = innocentCloseTimeout, 64<<10, m

	start := make(chan time.Time, 1) // when the offender committed the offence
	quiet := make(chan struct{})     // closed when the innocent peer has heard
	offenderSaw := make(chan heard, 1)
	innocentSaw := make(chan heard, 1)
	play := func(c *testkit.Conn, offends bool) {
		if offends {
			t0 := time.Now()
			start <- t0
			o.commit(c)
			hangUp := t0.Add(hangUpAfter)
			if o.patient || o.code == 0 {
				hangUp = time.Time{} // a dropped offender is hung up on by the proxy
			}
			offenderSaw <- endAsOffender(c, o.deaf, quiet, hangUp)
		} else {
			innocentSaw <- endAsInnocent(c, o.flood)
		}
	}
	upOffends := offender == initiatorUpstream
	up := startRaw(t, func(c *testkit.Conn) {
		if upOffends {
			c.ReadFrameTimeout(5 * time.Second) // the client's go-ahead
		}
		play(c, upOffends)
	})
	e := startSession(t, up.URL, cfg)
	raw := testkit.DialRaw(t, e.URL)
	if upOffends {
		raw.Send(testkit.Text("go"))
	}
	go play(raw, !upOffends)

	innocent := testkit.Recv(t, innocentSaw, 10*time.Second, "the innocent peer's end")
	close(quiet)
	guilty := testkit.Recv(t, offenderSaw, 15*time.Second, "the offender's end")
	t0 := testkit.Recv(t, start, time.Second, "the offence")

	code, reason := int(wsmw.StatusGoingAway), "client "+o.blame
	if upOffends {
		code, reason = int(wsmw.StatusBadGateway), "upstream "+o.blame
	}
	wantRawClose(t, "innocent "+otherSide(offender), innocent.close, innocent.err, code, reason)
	if d := innocent.closeAt.Sub(t0); innocent.close != nil && d > o.after+hearsWithin {
		t.Errorf("innocent %s heard after %v, want within %v (CloseTimeout %v)", otherSide(offender), d, o.after+hearsWithin, innocentCloseTimeout)
	} else if innocent.close != nil {
		t.Logf("%s by the %s: the innocent %s heard %v after it (CloseTimeout %v)",
			o.name, offender, otherSide(offender), d.Round(10*time.Microsecond), innocentCloseTimeout)
	}
	if !innocent.ended || innocent.endAt.Sub(innocent.closeAt) > time.Second {
		t.Errorf("innocent %s: connection ended %v (%v after its close), want within 1s of it", otherSide(offender), innocent.ended, innocent.endAt.Sub(innocent.closeAt))
	}

	ended := guilty.endAt.Sub(t0)
	switch {
	case o.code == 0: // dropped at once, without a close
		if guilty.close != nil || !guilty.ended {
			t.Errorf("dropped %s got close %v, connection ended %v; want no close and the connection ended", offender, guilty.close, guilty.ended)
		}
	case o.patient: // it never answers: the proxy waits CloseTimeout for it, then hangs up
		if !guilty.ended || ended < innocentCloseTimeout-time.Second || ended > innocentCloseTimeout+2*time.Second {
			t.Errorf("offending %s: connection ended %v, %v after the offence; want about CloseTimeout (%v)", offender, guilty.ended, ended, innocentCloseTimeout)
		}
	case guilty.ended:
		t.Errorf("offending %s: connection ended %v after the offence, before it hung up: its close handshake was cut", offender, ended)
	}
	if o.code != 0 {
		wantRawClose(t, "offending "+offender, guilty.close, nil, o.code, o.reason)
		if d := guilty.closeAt.Sub(t0); guilty.close != nil && d > hearsWithin {
			t.Errorf("offending %s got its close after %v, want within %v", offender, d, hearsWithin)
		}
	}

	by := offender
	if o.endProxy {
		by = initiatorProxy
	}
	e.wantEnd(o.endCode, by)
	want := metricKey("t_closes_total", map[string]string{"code": fmt.Sprint(o.endCode), "initiator": by, "client_proto": "http/1.1"})
	if got := gather(t, reg); got[want] != 1 || got["t_sessions_active"] != 0 {
		t.Errorf("%s = %v, sessions_active = %v; want 1 and 0", want, got[want], got["t_sessions_active"])
	}
}

// otherSide names the leg that is not side.
func otherSide(side string) string {
	if side == initiatorClient {
		return initiatorUpstream
	}
	return initiatorClient
}

// endAsOffender plays the offender after its offence: deaf, it reads nothing
// until quiet is closed; then it reads every frame, answering none (not even
// pings), until the connection ends or, if hangUp is set, until then: then it
// closes the connection itself, without a close frame (ended is false).
func endAsOffender(c *testkit.Conn, deaf bool, quiet <-chan struct{}, hangUp time.Time) heard {
	if deaf {
		select {
		case <-quiet:
		case <-time.After(10 * time.Second):
		}
	}
	if hangUp.IsZero() {
		hangUp = time.Now().Add(10 * time.Second)
	}
	var h heard
	c.SetReadDeadline(hangUp)
	for {
		f, err := c.ReadFrame()
		if err != nil {
			h.endAt = time.Now()
			h.ended = !isTimeout(err)
			c.Close()
			return h
		}
		if f.Op == wsmw.OpClose && h.close == nil {
			h.close, h.closeAt = &f, time.Now()
		}
	}
}

// endAsInnocent plays the innocent peer: it answers pings and, with flood,
// writes 32 KiB binary frames all along, until the proxy's close, which it
// answers; it returns when the connection has ended.
func endAsInnocent(c *testkit.Conn, flood bool) heard {
	var halt atomic.Bool
	flooded := make(chan struct{})
	go func() {
		defer close(flooded)
		for msg := testkit.Binary(make([]byte, 32<<10)); flood && !halt.Load(); {
			if c.Send(msg) != nil {
				return
			}
		}
	}()
	var h heard
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for h.close == nil {
		f, err := c.ReadFrame()
		switch {
		case err != nil:
			halt.Store(true)
			<-flooded
			h.err = err
			return h
		case f.Op == wsmw.OpPing:
			c.Send(testkit.Pong(string(f.Payload)))
		case f.Op == wsmw.OpClose:
			h.close, h.closeAt = &f, time.Now()
		}
	}
	halt.Store(true)
	<-flooded // no data after the close
	c.Send(testkit.Frame{Fin: true, Op: wsmw.OpClose, Payload: h.close.Payload})
	h.ended = c.WaitEOF(5 * time.Second)
	h.endAt = time.Now()
	return h
}

// The example, with a coder/websocket client (gorilla 1.5.3 refuses
// 1014): an upstream announcing a 2 GiB frame and stalling gets 1009 at once,
// and the client 1014 "upstream violated the protocol" within hearsWithin,
// not after CloseTimeout (it used to be 5 s, and 1001).
func TestInnocentCoderClientHearsOfStalledGiantFrame(t *testing.T) {
	testkit.CheckGoroutines(t)
	start := make(chan time.Time, 1)
	upSaw := make(chan heard, 1)
	up := startRaw(t, func(c *testkit.Conn) {
		start <- time.Now()
		announce(c, 2<<30)
		upSaw <- endAsOffender(c, false, nil, time.Now().Add(hangUpAfter))
	})
	e := startSession(t, up.URL, Config{CloseTimeout: innocentCloseTimeout})
	c, _, ctx := dialCoder(t, e.URL, coder.CompressionDisabled)
	_, _, err := c.Read(ctx)
	heardAt := time.Now()
	wantCoderClose(t, "client", err, int(wsmw.StatusBadGateway), "upstream violated the protocol")
	t0 := testkit.Recv(t, start, time.Second, "the upstream's frame")
	if d := heardAt.Sub(t0); d > hearsWithin {
		t.Errorf("client heard after %v, want within %v (CloseTimeout %v)", d, hearsWithin, innocentCloseTimeout)
	}
	upEnd := testkit.Recv(t, upSaw, 10*time.Second, "the upstream's end")
	wantRawClose(t, "upstream", upEnd.close, nil, 1009, "message too big")
	if d := upEnd.closeAt.Sub(t0); d > hearsWithin {
		t.Errorf("upstream got 1009 after %v, want within %v", d, hearsWithin)
	}
	if upEnd.ended {
		t.Errorf("upstream's connection ended %v after its frame, before it hung up", upEnd.endAt.Sub(t0))
	}
	e.wantEnd(1009, initiatorProxy)
}
