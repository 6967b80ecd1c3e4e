package jobs

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/kinds"
)

// testImage is a w×h picture with gradients and some noise (so JPEG quality matters).
func testImage(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	rng := rand.New(rand.NewPCG(1, 2))
	for y := range h {
		for x := range w {
			n := uint8(rng.IntN(40))
			img.Set(x, y, color.RGBA{uint8(x * 255 / w), uint8(y * 255 / h), 128 + n, 255})
		}
	}
	return img
}

func encodePNG(t *testing.T, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, (&png.Encoder{CompressionLevel: png.NoCompression}).Encode(&buf, img))
	return buf.Bytes()
}

func encodeJPEG(t *testing.T, img image.Image, quality int) []byte {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, jpeg.Encode(&buf, img, &jpeg.Options{Quality: quality}))
	return buf.Bytes()
}

func processFile(t *testing.T, b *bundle, data obj) (FileResult, []byte) {
	t.Helper()
	res, err := run(t, fileProcessKind(b.deps), data)
	require.NoError(t, err)
	r := res.(FileResult)
	require.Equal(t, "processed", filepath.Dir(r.OutputPath))
	out, err := os.ReadFile(filepath.Join(b.cfg.FilesRoot, r.OutputPath))
	require.NoError(t, err)
	require.Equal(t, int64(len(out)), r.Size)
	return r, out
}

func TestFileResize(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	writeFile(t, b.cfg.FilesRoot, "img/photo.png", encodePNG(t, testImage(400, 200)))
	writeFile(t, b.cfg.FilesRoot, "img/photo.jpg", encodeJPEG(t, testImage(300, 600), 90))

	r, out := processFile(t, b, obj{"filePath": "img/photo.png", "operation": "resize", "options": obj{"width": 100}})
	img, format, err := image.Decode(bytes.NewReader(out))
	require.NoError(t, err)
	require.Equal(t, "png", format)
	require.Equal(t, image.Pt(100, 50), img.Bounds().Size(), "the height follows the aspect ratio")
	require.Equal(t, 100, r.Width)
	require.Equal(t, 50, r.Height)

	_, out = processFile(t, b, obj{"filePath": "img/photo.jpg", "operation": "resize", "options": obj{"height": 120}})
	img, format, err = image.Decode(bytes.NewReader(out))
	require.NoError(t, err)
	require.Equal(t, "jpeg", format)
	require.Equal(t, image.Pt(60, 120), img.Bounds().Size())

	// Both sides: the image fits the box, keeping its aspect.
	_, out = processFile(t, b, obj{"filePath": "img/photo.png", "operation": "resize", "options": obj{"width": 1000, "height": 100}})
	cfg, _, err := image.DecodeConfig(bytes.NewReader(out))
	require.NoError(t, err)
	require.Equal(t, 200, cfg.Width)
	require.Equal(t, 100, cfg.Height)
}

func TestFileConvert(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	// Half transparent: JPEG has no alpha, so it is painted on white rather than black.
	src := testImage(64, 32)
	for x := range 32 {
		for y := range 32 {
			src.Set(x, y, color.RGBA{})
		}
	}
	writeFile(t, b.cfg.FilesRoot, "a.png", encodePNG(t, src))

	for _, c := range []struct{ format, ext string }{{"jpeg", ".jpg"}, {"gif", ".gif"}, {"png", ".png"}} {
		r, out := processFile(t, b, obj{"filePath": "a.png", "operation": "convert", "options": obj{"format": c.format}})
		require.Equal(t, c.ext, filepath.Ext(r.OutputPath))
		img, format, err := image.Decode(bytes.NewReader(out))
		require.NoError(t, err, c.format)
		require.Equal(t, c.format, format)
		require.Equal(t, image.Pt(64, 32), img.Bounds().Size())
		if c.format == "jpeg" {
			r, g, bl, _ := img.At(5, 5).RGBA()
			require.Greater(t, min(r, g, bl), uint32(0xe000), "transparent pixels become white")
		}
	}
}

func TestFileCompress(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	jpg := encodeJPEG(t, testImage(320, 240), 100)
	pngBytes := encodePNG(t, testImage(320, 240))
	text := bytes.Repeat([]byte("the same line of a log file, again and again\n"), 2000)
	writeFile(t, b.cfg.FilesRoot, "big.jpg", jpg)
	writeFile(t, b.cfg.FilesRoot, "big.png", pngBytes)
	writeFile(t, b.cfg.FilesRoot, "app.log", text)

	r, out := processFile(t, b, obj{"filePath": "big.jpg", "operation": "compress", "options": obj{"quality": 40}})
	require.Less(t, len(out), len(jpg)/2)
	require.Equal(t, int64(len(jpg)), r.InputSize)
	_, format, err := image.DecodeConfig(bytes.NewReader(out))
	require.NoError(t, err)
	require.Equal(t, "jpeg", format)

	_, out = processFile(t, b, obj{"filePath": "big.png", "operation": "compress"})
	require.Less(t, len(out), len(pngBytes))
	decoded, err := png.Decode(bytes.NewReader(out))
	require.NoError(t, err)
	require.Equal(t, testImage(320, 240).Pix, toRGBA(decoded).Pix, "PNG stays lossless")

	r, out = processFile(t, b, obj{"filePath": "app.log", "operation": "compress"})
	require.Regexp(t, `^processed/app-job-[0-9a-f]+\.log\.gz$`, r.OutputPath)
	require.Equal(t, ".gz", filepath.Ext(r.OutputPath))
	require.Less(t, len(out), len(text)/10)
	zr, err := gzip.NewReader(bytes.NewReader(out))
	require.NoError(t, err)
	back, err := io.ReadAll(zr)
	require.NoError(t, err)
	require.Equal(t, text, back)
}

func toRGBA(img image.Image) *image.RGBA {
	if r, ok := img.(*image.RGBA); ok {
		return r
	}
	dst := image.NewRGBA(img.Bounds())
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y++ {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x++ {
			dst.Set(x, y, img.At(x, y))
		}
	}
	return dst
}

func TestFileExtractText(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	writeFile(t, b.cfg.FilesRoot, "docs/readme.md", []byte("# Title #\n\nSome **bold** and _italic_ text with a [link](https://example.com) and `code`.\n\n- one\n* two\n\n> quoted\n\n```\nfmt.Println(\"x\")\n```\n![logo](logo.png)\n"))
	writeFile(t, b.cfg.FilesRoot, "docs/page.html", []byte(`<!DOCTYPE html><html><head><title>T</title><style>p{color:red}</style></head>
<body><h1>Hello &amp; welcome</h1><p>First   paragraph
with <b>bold</b> text.</p><script>alert("no")</script><ul><li>one</li><li>two</li></ul><pre>  keep   this</pre></body></html>`))
	writeFile(t, b.cfg.FilesRoot, "docs/notes.txt", []byte("line one\r\nline two\n\n\n\nline three\xff\n"))
	writeFile(t, b.cfg.FilesRoot, "docs/noext", []byte("<html><body><p>sniffed</p></body></html>"))

	_, out := processFile(t, b, obj{"filePath": "docs/readme.md", "operation": "extract_text"})
	require.Equal(t, "Title\n\nSome bold and italic text with a link and code.\n\n- one\n- two\n\nquoted\n\nfmt.Println(\"x\")\n\nlogo\n", string(out))

	r, out := processFile(t, b, obj{"filePath": "docs/page.html", "operation": "extract_text"})
	require.Equal(t, "Hello & welcome\n\nFirst paragraph with bold text.\n\n- one\n- two\n\n  keep   this\n", string(out))
	require.Equal(t, ".txt", filepath.Ext(r.OutputPath))
	require.NotNil(t, r.Chars)

	_, out = processFile(t, b, obj{"filePath": "docs/notes.txt", "operation": "extract_text"})
	require.Equal(t, "line one\nline two\n\nline three\uFFFD\n", string(out))

	_, out = processFile(t, b, obj{"filePath": "docs/noext", "operation": "extract_text"})
	require.Equal(t, "sniffed\n", string(out))
}

// pngHeaderOnly is a PNG signature and IHDR announcing w×h pixels, with no image data:
// enough for DecodeConfig, which must refuse it before anything is decoded.
func pngHeaderOnly(w, h uint32) []byte {
	var buf bytes.Buffer
	buf.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 2 // 8-bit RGB
	chunk := append([]byte("IHDR"), ihdr...)
	_ = binary.Write(&buf, binary.BigEndian, uint32(len(ihdr)))
	buf.Write(chunk)
	_ = binary.Write(&buf, binary.BigEndian, crc32.ChecksumIEEE(chunk))
	return buf.Bytes()
}

func TestFileRefusals(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	h := fileProcessKind(b.deps)
	outside := t.TempDir()
	writeFile(t, outside, "secret.txt", []byte("secret"))
	require.NoError(t, os.Symlink(filepath.Join(outside, "secret.txt"), filepath.Join(b.cfg.FilesRoot, "escape.txt")))
	require.NoError(t, os.Symlink(outside, filepath.Join(b.cfg.FilesRoot, "outdir")))
	writeFile(t, b.cfg.FilesRoot, "huge.png", pngHeaderOnly(10000, 6000))
	writeFile(t, b.cfg.FilesRoot, "doc.pdf", []byte("%PDF-1.4\n"))
	writeFile(t, b.cfg.FilesRoot, "bin.dat", []byte{0, 1, 2, 3, 0xff})
	writeFile(t, b.cfg.FilesRoot, "notimage.png", []byte("just text"))
	// A hard link placed in the root to a file outside it (same file system: the temp
	// folders share one).
	require.NoError(t, os.Link(filepath.Join(outside, "secret.txt"), filepath.Join(b.cfg.FilesRoot, "hardlink.txt")))
	big, err := os.Create(filepath.Join(b.cfg.FilesRoot, "big.log"))
	require.NoError(t, err)
	require.NoError(t, big.Truncate(100<<20+1)) // sparse: no disk used
	require.NoError(t, big.Close())

	// Refused at submission: the kind's check sees them; and a job that skipped the
	// check (enqueued in SQL) fails permanently before its handler runs.
	for _, p := range []string{"../secret.txt", "/etc/passwd", "a/../../b"} {
		raw := []byte(`{"filePath":"` + p + `","operation":"extract_text"}`)
		problems := h.Check(raw)
		require.Len(t, problems, 1, p)
		require.Equal(t, "filePath", problems[0].Field, p)
		_, err := h.Run(context.Background(), kinds.NewJob("job-"+randomHex(4), TypeFileProcess, "default", 1, 3, nil), raw)
		require.ErrorContains(t, err, "invalid data: filePath:", p)
		require.True(t, kinds.IsPermanent(err), p)
	}
	// Refused when the job runs, permanently.
	for _, c := range []obj{
		{"filePath": "escape.txt", "operation": "extract_text"},
		{"filePath": "hardlink.txt", "operation": "extract_text"},
		{"filePath": "outdir/secret.txt", "operation": "compress"},
		{"filePath": "missing.png", "operation": "compress"},
		{"filePath": "huge.png", "operation": "resize", "options": obj{"width": 10}},
		{"filePath": "big.log", "operation": "compress"},
		{"filePath": "doc.pdf", "operation": "extract_text"},
		{"filePath": "bin.dat", "operation": "extract_text"},
		{"filePath": "notimage.png", "operation": "convert", "options": obj{"format": "gif"}},
		{"filePath": ".", "operation": "compress"},
	} {
		_, err := run(t, h, c)
		require.Error(t, err, "%v", c)
		require.True(t, kinds.IsPermanent(err), "%v: %v", c, err)
	}
	// The processed folder replaced by a symlink out of the root: no output lands outside.
	writeFile(t, b.cfg.FilesRoot, "ok.txt", []byte("hello"))
	require.NoError(t, os.Symlink(outside, filepath.Join(b.cfg.FilesRoot, "processed")))
	_, err = run(t, h, obj{"filePath": "ok.txt", "operation": "compress"})
	require.Error(t, err)
	entries, err := os.ReadDir(outside)
	require.NoError(t, err)
	require.Len(t, entries, 1, "nothing was written outside FILES_ROOT")
}
