package main

// The driver against a tiny fake fuzzing server (gorilla/websocket, not wsmw):
// getCaseCount answers 2; case 1 sends a text and a binary message, case 2 a
// fragmented text message with a ping in between and an empty binary message;
// each expects its messages echoed exactly and then closes; updateReports
// records the agent.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

type fakeMsg struct {
	typ  int
	data []byte
}

// fakeServer is a fake Autobahn fuzzing server.
type fakeServer struct {
	mu      sync.Mutex
	verdict map[string]string // "case N" -> "OK" or what went wrong
	order   []string
	reports []string // agents whose reports were requested
}

func (f *fakeServer) record(key, verdict string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.verdict[key] = verdict
	f.order = append(f.order, key)
}

// cases are the messages each case sends; case 2's first message goes out in fragments.
var fakeCases = map[string][]fakeMsg{
	"1": {
		{websocket.TextMessage, []byte("Hello, κόσμε")},
		{websocket.BinaryMessage, []byte{0, 1, 2, 0xFE, 0xFF}},
	},
	"2": {
		{websocket.TextMessage, []byte("fragmented 𝄞 message in three parts")},
		{websocket.BinaryMessage, []byte{}},
	},
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	upg := websocket.Upgrader{}
	c, err := upg.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	closeNormal := func() {
		c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}
	switch r.URL.Path {
	case "/getCaseCount":
		c.WriteMessage(websocket.TextMessage, []byte("2"))
		closeNormal()
	case "/runCase":
		id := r.URL.Query().Get("case")
		key := "case " + id
		if agent := r.URL.Query().Get("agent"); agent != "wsgate" {
			f.record(key, "agent "+agent)
			return
		}
		msgs, ok := fakeCases[id]
		if !ok {
			f.record(key, "no such case")
			return
		}
		for i, m := range msgs {
			if id == "2" && i == 0 {
				// Three fragments with a ping between the first two.
				third := len(m.data) / 3
				wr, _ := c.NextWriter(m.typ)
				wr.Write(m.data[:third])
				if fl, ok := wr.(interface{ Flush() error }); ok {
					fl.Flush()
				}
				c.WriteControl(websocket.PingMessage, []byte("between"), time.Now().Add(time.Second))
				wr.Write(m.data[third : 2*third])
				if fl, ok := wr.(interface{ Flush() error }); ok {
					fl.Flush()
				}
				wr.Write(m.data[2*third:])
				wr.Close()
			} else if err := c.WriteMessage(m.typ, m.data); err != nil {
				f.record(key, "write: "+err.Error())
				return
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			typ, got, err := c.ReadMessage()
			if err != nil {
				f.record(key, fmt.Sprintf("message %d: no echo: %v", i, err))
				return
			}
			if typ != m.typ || !bytes.Equal(got, m.data) {
				f.record(key, fmt.Sprintf("message %d: echo type %d %q, want type %d %q", i, typ, got, m.typ, m.data))
				return
			}
		}
		f.record(key, "OK")
		closeNormal()
	case "/updateReports":
		f.mu.Lock()
		f.reports = append(f.reports, r.URL.Query().Get("agent"))
		f.mu.Unlock()
		closeNormal()
	default:
		c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1008, "unknown resource"), time.Now().Add(time.Second))
	}
}

func TestDriverAgainstFakeFuzzingServer(t *testing.T) {
	f := &fakeServer{verdict: make(map[string]string)}
	srv := httptest.NewServer(f)
	defer srv.Close()
	var logs strings.Builder
	cfg := config{
		base:        "ws" + strings.TrimPrefix(srv.URL, "http"),
		agent:       "wsgate",
		caseTimeout: 10 * time.Second,
		maxMessage:  1 << 20,
		log:         log.New(&logs, "", 0),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, cfg); err != nil {
		t.Fatalf("run: %v\n%s", err, logs.String())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if got := strings.Join(f.order, ","); got != "case 1,case 2" {
		t.Errorf("cases ran: %s, want case 1,case 2", got)
	}
	for _, k := range []string{"case 1", "case 2"} {
		if f.verdict[k] != "OK" {
			t.Errorf("%s: %s", k, f.verdict[k])
		}
	}
	if len(f.reports) != 1 || f.reports[0] != "wsgate" {
		t.Errorf("updateReports calls: %q, want one for wsgate", f.reports)
	}
	t.Logf("driver log:\n%s", logs.String())
}

func TestDriverSingleCase(t *testing.T) {
	f := &fakeServer{verdict: make(map[string]string)}
	srv := httptest.NewServer(f)
	defer srv.Close()
	cfg := config{
		base: "ws" + strings.TrimPrefix(srv.URL, "http"), agent: "wsgate", only: 2,
		caseTimeout: 10 * time.Second, maxMessage: 1 << 20, log: log.New(io.Discard, "", 0),
	}
	if err := run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if strings.Join(f.order, ",") != "case 2" || f.verdict["case 2"] != "OK" {
		t.Errorf("ran %q with verdicts %v", f.order, f.verdict)
	}
	cfg.only = 3
	if err := run(context.Background(), cfg); err == nil {
		t.Error("case 3 of 2 did not fail")
	}
}
