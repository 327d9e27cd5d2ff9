package integration

// The demo page of examples/chi in a real browser: headless Chromium (Debian's
// /usr/bin/chromium) driven over the DevTools protocol by chromedp. The page's
// own WebSocket client talks to the proxy at /ws, which forwards to a
// gorilla/websocket echo upstream; the test reads the page's state from
// window.wsgate.

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/proxy"
)

const (
	chromiumPath   = "/usr/bin/chromium"
	screenshotPath = "/tmp/wsgate-browser.png"
)

// pageReceived is one entry of window.wsgate.received.
type pageReceived struct {
	Type   string `json:"type"`
	Data   any    `json:"data"` // text, or the first 64 bytes of a binary message
	Length int    `json:"length"`
}

// pageClosed is window.wsgate.closed, from the page's onclose.
type pageClosed struct {
	Code     int    `json:"code"`
	Reason   string `json:"reason"`
	WasClean bool   `json:"wasClean"`
}

func TestBrowserChromium(t *testing.T) {
	checkLeaks(t)
	_, err := os.Stat(chromiumPath)
	testkit.RequirePeer(t, err == nil, "chromium not installed at %s: run integration/setup.sh", chromiumPath)

	up := gorillaUpstream(t, 0)
	// MaxMessageSize 1000: the echoes below are small, the page's #sendBig is not.
	front := startDemoFront(t, proxy.Config{Upstreams: []string{up.URL}, MaxMessageSize: 1000})

	bctx, closeBrowser := startChromium(t.TempDir(), chromedp.WindowSize(1000, 900))
	defer closeBrowser() // before the servers stop (cleanups run after)
	page := pageDriver{t, bctx}
	run, poll, closed := page.run, page.poll, page.closed
	received := func() []pageReceived {
		t.Helper()
		r, err := chromedp.Run(bctx, chromedp.Evaluate[[]pageReceived](`window.wsgate.received`))
		if err != nil {
			t.Fatalf("reading window.wsgate.received: %v", err)
		}
		return r
	}
	connect := func() *upConn {
		t.Helper()
		run("connecting", chromedp.Click(chromedp.ID("connect")))
		poll("waiting for onopen", `window.wsgate.closed === null && document.getElementById("status").textContent === "connected"`)
		return up.Next(t)
	}

	run("loading the page", chromedp.Navigate(front.URL+"/"), chromedp.WaitVisible(chromedp.ID("connect")))
	title, err := chromedp.Run(bctx, chromedp.Title())
	if err != nil {
		t.Fatalf("reading the title: %v", err)
	}
	if title != "wsgate demo" {
		t.Errorf("page title %q, want %q", title, "wsgate demo")
	}

	// Echoes of text (ASCII and UTF-8) and binary through the proxy.
	uc := connect()
	if o := uc.Header.Get("Origin"); o != front.URL {
		t.Errorf("upstream saw Origin %q, want the page's %q", o, front.URL)
	}
	run("sending text", chromedp.SetValue(chromedp.ID("message"), "hello from chromium"), chromedp.Click(chromedp.ID("sendText")))
	poll("waiting for the text echo", `window.wsgate.received.length === 1`)
	run("sending binary", chromedp.Click(chromedp.ID("sendBinary")))
	poll("waiting for the binary echo", `window.wsgate.received.length === 2`)
	run("sending utf-8", chromedp.SetValue(chromedp.ID("message"), utf8Text), chromedp.Click(chromedp.ID("sendText")))
	poll("waiting for the utf-8 echo", `window.wsgate.received.length === 3`)
	got := received()
	if got[0].Type != "text" || got[0].Data != "hello from chromium" || got[0].Length != 19 {
		t.Errorf("text echo %+v", got[0])
	}
	var wantBytes []any
	for _, b := range []byte("hello from chromium") {
		wantBytes = append(wantBytes, float64(b))
	}
	if gotBytes, _ := got[1].Data.([]any); got[1].Type != "binary" || got[1].Length != 19 || !slices.Equal(gotBytes, wantBytes) {
		t.Errorf("binary echo %+v, want the 19 bytes of the text", got[1])
	}
	if got[2].Type != "text" || got[2].Data != utf8Text {
		t.Errorf("utf-8 echo %+v, want %q", got[2], utf8Text)
	}

	// (a) A 100000-byte text over MaxMessageSize 1000: the page gets 1009.
	run("sending the big text", chromedp.Click(chromedp.ID("sendBig")))
	if c := closed(); c.Code != 1009 || c.Reason != reasonTooBig || !c.WasClean {
		t.Errorf("after #sendBig the page saw close %+v, want 1009 %q, clean", c, reasonTooBig)
	}
	waitClose(t, uc, 1001, reasonClientViolation)

	// (c) The page closes with 4000: the upstream sees exactly that.
	uc = connect()
	run("closing with 4000", chromedp.SetValue(chromedp.ID("code"), "4000"),
		chromedp.SetValue(chromedp.ID("reason"), "page bye"), chromedp.Click(chromedp.ID("disconnect")))
	waitClose(t, uc, 4000, "page bye")
	if c := closed(); c.Code != 4000 || c.Reason != "" || !c.WasClean { // gorilla echoes the code alone
		t.Errorf("after the page's close the page saw %+v, want 4000 \"\", clean", c)
	}

	// (b) The upstream dies: the page gets 1014.
	connect()
	up.Kill()
	if c := closed(); c.Code != 1014 || c.Reason != reasonUpstreamGone || !c.WasClean {
		t.Errorf("after the upstream died the page saw close %+v, want 1014 %q, clean", c, reasonUpstreamGone)
	}

	// (d) Compression in terminate mode: Chromium always offers permessage-deflate;
	// the proxy accepts it on the browser's leg and talks plain to the upstream.
	up2 := gorillaUpstream(t, 0)
	zfront := startDemoFront(t, proxy.Config{Upstreams: []string{up2.URL}, Compression: proxy.CompressionTerminate})
	run("loading the page (compression)", chromedp.Navigate(zfront.URL+"/"), chromedp.WaitVisible(chromedp.ID("connect")))
	run("connecting (compression)", chromedp.Click(chromedp.ID("connect")))
	poll("waiting for onopen (compression)", `document.getElementById("status").textContent === "connected"`)
	zuc := up2.Next(t)
	ext, err := chromedp.Run(bctx, chromedp.Evaluate[string](`ws.extensions`))
	if err != nil || !strings.Contains(ext, "permessage-deflate") {
		t.Errorf("the browser's negotiated extensions are %q (%v), want permessage-deflate", ext, err)
	}
	if h := zuc.Header.Get("Sec-WebSocket-Extensions"); h != "" {
		t.Errorf("the upstream leg was offered %q, want a plain leg", h)
	}
	run("sending a big compressible text", chromedp.SetValue(chromedp.ID("size"), "100000"), chromedp.Click(chromedp.ID("sendBig")))
	poll("waiting for the big echo", `window.wsgate.received.length === 1 && window.wsgate.received[0].length === 100000`)
	run("closing (compression)", chromedp.SetValue(chromedp.ID("code"), "4000"), chromedp.Click(chromedp.ID("disconnect")))
	waitClose(t, zuc, 4000, "bye") // the page's default reason

	// One screenshot of the page and its log, to look at (not kept in the repository).
	png, err := chromedp.Run(bctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("taking a screenshot: %v", err)
	}
	if err := os.WriteFile(screenshotPath, png, 0o644); err != nil {
		t.Errorf("writing the screenshot: %v", err)
	} else {
		t.Logf("screenshot: %s (%d bytes)", screenshotPath, len(png))
	}
}
