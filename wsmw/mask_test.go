package wsmw

import (
	"bytes"
	"math/rand"
	"testing"
)

// naiveMask is the RFC 6455 §5.3 definition: j = i MOD 4, octet ^= key[j].
func naiveMask(key [4]byte, pos int, b []byte) int {
	for i := range b {
		b[i] ^= key[(pos+i)%4]
	}
	return (pos + len(b)) % 4
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	rng.Read(b)
	return b
}

func TestMaskMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	keys := [][4]byte{{0, 0, 0, 0}, {0xff, 0xff, 0xff, 0xff}, {0x37, 0xfa, 0x21, 0x3d}, {1, 2, 3, 4}}
	for i := 0; i < 4; i++ {
		var k [4]byte
		rng.Read(k[:])
		keys = append(keys, k)
	}
	for _, key := range keys {
		for n := 0; n <= 100; n++ {
			for pos := 0; pos < 8; pos++ { // positions ≥4 wrap
				// Offsets into a larger buffer: the word loop must not depend on alignment.
				for off := 0; off < 3; off++ {
					buf := randBytes(rng, n+off)
					got := append([]byte(nil), buf...)
					want := append([]byte(nil), buf...)
					gp := Mask(key, pos, got[off:])
					wp := naiveMask(key, pos, want[off:])
					if gp != wp || !bytes.Equal(got, want) {
						t.Fatalf("key %x, pos %d, len %d, off %d: Mask gave pos %d %x, want pos %d %x", key, pos, n, off, gp, got, wp, want)
					}
				}
			}
		}
	}
}

func TestMaskLarge(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	key := [4]byte{0xde, 0xad, 0xbe, 0xef}
	for _, n := range []int{255, 256, 257, 4096, 65537} {
		for pos := 0; pos < 4; pos++ {
			buf := randBytes(rng, n)
			got := append([]byte(nil), buf...)
			Mask(key, pos, got)
			naiveMask(key, pos, buf)
			if !bytes.Equal(got, buf) {
				t.Fatalf("len %d pos %d differs", n, pos)
			}
		}
	}
}

// TestMaskChunked: masking a payload in pieces, carrying the returned position,
// equals masking it whole, for every way of cutting it into 1..4 chunks.
func TestMaskChunked(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	for n := 0; n <= 70; n++ {
		orig := randBytes(rng, n)
		for start := 0; start < 4; start++ {
			whole := append([]byte(nil), orig...)
			naiveMask(key, start, whole)
			for trial := 0; trial < 20; trial++ {
				got := append([]byte(nil), orig...)
				pos, rest := start, got
				for len(rest) > 0 {
					k := rng.Intn(len(rest) + 1)
					if rng.Intn(4) == 0 {
						k = 0 // empty chunks leave the position alone
					}
					pos = Mask(key, pos, rest[:k])
					rest = rest[k:]
				}
				if !bytes.Equal(got, whole) || pos != (start+n)%4 {
					t.Fatalf("len %d start %d: chunked masking differs (pos %d)", n, start, pos)
				}
			}
		}
	}
}

// TestMaskInvolution: masking twice restores the payload.
func TestMaskInvolution(t *testing.T) {
	rng := rand.New(rand.NewSource(4))
	key := [4]byte{9, 8, 7, 6}
	for n := 0; n < 200; n += 7 {
		orig := randBytes(rng, n)
		b := append([]byte(nil), orig...)
		Mask(key, 1, b)
		Mask(key, 1, b)
		if !bytes.Equal(b, orig) {
			t.Fatalf("len %d: mask twice is not the identity", n)
		}
	}
}

// TestRemask: Remask equals unmasking with from then masking with to, for all
// positions and lengths, also applied in chunks.
func TestRemask(t *testing.T) {
	rng := rand.New(rand.NewSource(5))
	from := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	to := [4]byte{0x01, 0x80, 0xfe, 0x55}
	for n := 0; n <= 100; n++ {
		plain := randBytes(rng, n)
		for fp := 0; fp < 4; fp++ {
			for tp := 0; tp < 4; tp++ {
				masked := append([]byte(nil), plain...)
				naiveMask(from, fp, masked)
				want := append([]byte(nil), plain...)
				naiveMask(to, tp, want)

				got := append([]byte(nil), masked...)
				gf, gt := remask(from, fp, to, tp, got)
				if !bytes.Equal(got, want) || gf != (fp+n)%4 || gt != (tp+n)%4 {
					t.Fatalf("len %d from %d to %d: Remask differs (positions %d %d)", n, fp, tp, gf, gt)
				}
				// In chunks, carrying both positions.
				got = append(got[:0], masked...)
				f, tt, rest := fp, tp, got
				for len(rest) > 0 {
					k := rng.Intn(len(rest) + 1)
					f, tt = remask(from, f, to, tt, rest[:k])
					rest = rest[k:]
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("len %d from %d to %d: chunked Remask differs", n, fp, tp)
				}
			}
		}
	}
}

func TestRotateKey(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	for pos := 0; pos < 8; pos++ {
		r := rotateKey(key, pos)
		for i := 0; i < 4; i++ {
			if r[i] != key[(pos+i)%4] {
				t.Fatalf("rotateKey(%v, %d) = %v", key, pos, r)
			}
		}
	}
}
