package main

import (
	"flag"
	"io"
	"testing"

	"github.com/wsgate/wsgate/wsmw"
)

func TestDeflateFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want *wsmw.CompressionOptions
	}{
		{nil, &wsmw.CompressionOptions{Threshold: -1}}, // the default
		{[]string{"-deflate", "on"}, &wsmw.CompressionOptions{Threshold: -1}},
		{[]string{"-deflate", "no-context-takeover"}, &wsmw.CompressionOptions{Threshold: -1, ServerNoContextTakeover: true, ClientNoContextTakeover: true}},
		{[]string{"-deflate", "off"}, nil},
		{[]string{"-server-max-window-bits", "9", "-client-max-window-bits", "12"}, &wsmw.CompressionOptions{Threshold: -1, ServerMaxWindowBits: 9, ClientMaxWindowBits: 12}},
	} {
		var cfg config
		fs := flag.NewFlagSet("client", flag.ContinueOnError)
		cfg.register(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		got := cfg.compression()
		switch {
		case (got == nil) != (tc.want == nil):
			t.Errorf("%v: compression %+v, want %+v", tc.args, got, tc.want)
		case got != nil && *got != *tc.want:
			t.Errorf("%v: compression %+v, want %+v", tc.args, *got, *tc.want)
		}
		if dc := cfg.dialConfig(); dc.Compression != got && (dc.Compression == nil || *dc.Compression != *got) {
			t.Errorf("%v: dial config compression %+v, want %+v", tc.args, dc.Compression, got)
		}
	}
}

func TestDeflateFlagRejects(t *testing.T) {
	var cfg config
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.register(fs)
	if err := fs.Parse([]string{"-deflate", "yes"}); err == nil {
		t.Error("-deflate yes was accepted")
	}
	for _, bits := range [][2]int{{7, 0}, {16, 0}, {0, 7}, {0, 16}, {-1, 0}} {
		if err := (config{serverBits: bits[0], clientBits: bits[1]}).checkWindowBits(); err == nil {
			t.Errorf("window bits %v accepted", bits)
		}
	}
	for _, bits := range [][2]int{{0, 0}, {8, 15}, {15, 8}} {
		if err := (config{serverBits: bits[0], clientBits: bits[1]}).checkWindowBits(); err != nil {
			t.Errorf("window bits %v: %v", bits, err)
		}
	}
}
