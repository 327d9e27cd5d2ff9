package wsmw

import (
	"math/rand"
	"strings"
	"testing"
	"unicode/utf8"
)

// utf8Cases are edge cases of UTF-8 validity (Markus Kuhn's stress test and
// the Autobahn 6.x cases), valid and invalid.
var utf8Cases = []string{
	"", "a", "hello", "\x00", "\x7f", strings.Repeat("a", 100),
	"κόσμε", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5",
	// Boundaries of each sequence length.
	"\u0080", "\u07ff", "\u0800", "\uffff", "\U00010000", "\U0010ffff",
	"\xc2\x80", "\xdf\xbf", "\xe0\xa0\x80", "\xef\xbf\xbf", "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf",
	"\xed\x9f\xbf", "\xee\x80\x80", "\xef\xbf\xbd", "\xef\xbf\xbe", // U+D7FF, U+E000, U+FFFD, U+FFFE
	// Beyond U+10FFFF and invalid lead bytes.
	"\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xf7\xbf\xbf\xbf", "\xf8\x88\x80\x80\x80", "\xfc\x84\x80\x80\x80\x80",
	"\xfe", "\xff", "\xfe\xfe\xff\xff",
	// Lone continuation bytes.
	"\x80", "\xbf", "\x80\xbf", "\x80\xbf\x80\xbf\x80\xbf\x80",
	// Lone and truncated lead bytes.
	"\xc0 ", "\xdf ", "\xe0 ", "\xef ", "\xf0 ", "\xf7 ", "\xc2", "\xe0\xa0", "\xf0\x90\x80", "\xf4\x8f\xbf",
	"\xe0\x80", "\xdf", "\xef\xbf", "\xf7\xbf\xbf",
	// Overlong encodings.
	"\xc0\xaf", "\xe0\x80\xaf", "\xf0\x80\x80\xaf", "\xf8\x80\x80\x80\xaf", "\xc1\xbf", "\xe0\x9f\xbf", "\xf0\x8f\xbf\xbf",
	"\xc0\x80", "\xe0\x80\x80", "\xf0\x80\x80\x80",
	// Surrogates, alone and paired.
	"\xed\xa0\x80", "\xed\xad\xbf", "\xed\xae\x80", "\xed\xaf\xbf", "\xed\xb0\x80", "\xed\xbe\x80", "\xed\xbf\xbf",
	"\xed\xa0\x80\xed\xb0\x80", "\xed\xaf\xbf\xed\xbf\xbf",
	// Valid text followed by an error, and errors after the 8-byte ASCII fast path.
	"κόσμε\xed\xa0\x80edited", "abcdefgh\xff", "abcdefghijklmnop\xc3", "abcdefghijklmnopq\xc3\xa9", "abcdefg\xc3\xa9bcdefgh",
	"12345678\xe2\x82\xac12345678\xf0\x9f\x98\x80", "1234567\x80", strings.Repeat("é", 40) + "\xc3",
	"a\xc3\x28b", "\xe2\x28\xa1", "\xe2\x82\x28", "\xf0\x28\x8c\xbc", "\xf0\x90\x28\xbc", "\xf0\x28\x8c\x28",
}

// completable reports whether p is a prefix of some valid UTF-8 sequence: some
// split p = head + tail has a valid head and a tail (at most 3 bytes) that up to
// three continuation bytes (one of each class) make valid.
func completable(p []byte) bool {
	conts := []byte{0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf}
	for k := 0; k <= 3 && k <= len(p); k++ {
		if !utf8.Valid(p[:len(p)-k]) {
			continue
		}
		if k == 0 {
			return true
		}
		tail := p[len(p)-k:]
		var q [6]byte
		copy(q[:], tail)
		for _, a := range conts {
			q[k] = a
			if utf8.Valid(q[:k+1]) {
				return true
			}
			for _, b := range conts {
				q[k+1] = b
				if utf8.Valid(q[:k+2]) {
					return true
				}
				for _, c := range conts {
					q[k+2] = c
					if utf8.Valid(q[:k+3]) {
						return true
					}
				}
			}
		}
	}
	return false
}

// checkIncremental feeds p to the validator in the given chunk sizes and
// checks that it agrees with utf8.Valid and fails exactly at the first chunk
// after which p can no longer become valid.
func checkIncremental(t *testing.T, p []byte, sizes []int) {
	t.Helper()
	var v utf8Validator
	end := 0
	for _, n := range sizes {
		end += n
		ok := v.write(p[end-n : end])
		if want := completable(p[:end]); ok != want {
			t.Fatalf("%q in chunks %v: write of chunk ending at %d = %v, but completable = %v", p, sizes, end, ok, want)
		}
		if !ok {
			// Once rejected, the validator stays rejected.
			if v.write([]byte("a")) || v.complete() {
				t.Fatalf("%q: validator recovered after rejecting", p)
			}
			return
		}
		if v.complete() != utf8.Valid(p[:end]) {
			t.Fatalf("%q in chunks %v: complete() after %d bytes = %v, utf8.Valid = %v", p, sizes, end, v.complete(), utf8.Valid(p[:end]))
		}
	}
	if end != len(p) {
		t.Fatalf("chunk sizes %v do not add up to %d", sizes, len(p))
	}
}

func ones(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = 1
	}
	return s
}

func TestValidUTF8Table(t *testing.T) {
	for _, s := range utf8Cases {
		p := []byte(s)
		if got, want := validUTF8(p), utf8.Valid(p); got != want {
			t.Errorf("validUTF8(%q) = %v, utf8.Valid = %v", s, got, want)
		}
		checkIncremental(t, p, []int{len(p)})
		checkIncremental(t, p, ones(len(p)))
		for cut := 0; cut <= len(p); cut++ {
			checkIncremental(t, p, []int{cut, len(p) - cut})
		}
	}
}

// randomUTF8 mixes random bytes, interesting bytes and valid text with mutations.
func randomUTF8(rng *rand.Rand) []byte {
	interesting := []byte{0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf,
		0xe0, 0xe1, 0xec, 0xed, 0xee, 0xef, 0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xf8, 0xfe, 0xff}
	n := rng.Intn(24)
	if rng.Intn(8) == 0 {
		n = rng.Intn(300)
	}
	var p []byte
	switch rng.Intn(3) {
	case 0:
		p = make([]byte, n)
		rng.Read(p)
	case 1:
		for len(p) < n {
			p = append(p, interesting[rng.Intn(len(interesting))])
		}
	default:
		for len(p) < n {
			var r rune
			switch rng.Intn(5) {
			case 0:
				r = rune(rng.Intn(0x80))
			case 1:
				r = rune(0x80 + rng.Intn(0x800-0x80))
			case 2:
				r = rune(0x800 + rng.Intn(0x10000-0x800))
			case 3:
				r = rune(0x10000 + rng.Intn(0x110000-0x10000))
			default:
				r = 'a'
			}
			p = utf8.AppendRune(p, r) // surrogates become U+FFFD
		}
		if len(p) > 0 && rng.Intn(2) == 0 {
			p[rng.Intn(len(p))] = interesting[rng.Intn(len(interesting))]
		}
		if len(p) > 0 && rng.Intn(4) == 0 {
			p = p[:rng.Intn(len(p))]
		}
	}
	return p
}

// TestValidUTF8Random is a property test with a fixed seed: the validator agrees
// with unicode/utf8 whole, byte by byte and in random chunks.
func TestValidUTF8Random(t *testing.T) {
	rng := rand.New(rand.NewSource(6455))
	valid := 0
	for i := 0; i < 20000; i++ {
		p := randomUTF8(rng)
		want := utf8.Valid(p)
		if want {
			valid++
		}
		if got := validUTF8(p); got != want {
			t.Fatalf("validUTF8(%q) = %v, utf8.Valid = %v", p, got, want)
		}
		if i%4 == 0 {
			checkIncremental(t, p, ones(len(p)))
		}
		var sizes []int
		for rest := len(p); rest > 0; {
			k := 1 + rng.Intn(min(rest, 12))
			if rng.Intn(6) == 0 {
				sizes = append(sizes, 0)
			}
			sizes = append(sizes, k)
			rest -= k
		}
		checkIncremental(t, p, sizes)
	}
	if valid < 2000 || valid > 18000 {
		t.Errorf("poor mix: %d valid inputs of 20000", valid)
	}
}

// TestUTF8ValidatorReset: reset clears both an open sequence and a rejection.
func TestUTF8ValidatorReset(t *testing.T) {
	var v utf8Validator
	if !v.write([]byte("\xe2\x82")) || v.complete() {
		t.Fatal("open sequence not tracked")
	}
	v.reset()
	if !v.complete() || !v.write([]byte("ok")) {
		t.Fatal("reset did not clear the open sequence")
	}
	if v.write([]byte("\xff")) {
		t.Fatal("0xFF accepted")
	}
	v.reset()
	if !v.write([]byte("€")) || !v.complete() {
		t.Fatal("reset did not clear the rejection")
	}
}
