package jobs

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"math"
	"net/http"
	"os"
	"path"
	"strings"

	"golang.org/x/image/draw"

	"github.com/pgqueue/queue/internal/kinds"
)

// fileProcessData is FILE_PROCESS's data.
type fileProcessData struct {
	UserID    *string      `json:"userId" validate:"omitnil,min=1,max=128"`
	FilePath  string       `json:"filePath" validate:"required,relpath"`
	Operation string       `json:"operation" validate:"required,oneof=resize compress convert extract_text"`
	Options   *fileOptions `json:"options"`
}

type fileOptions struct {
	Width   *int   `json:"width" validate:"omitnil,min=1,max=10000"`
	Height  *int   `json:"height" validate:"omitnil,min=1,max=10000"`
	Quality *int   `json:"quality" validate:"omitnil,min=1,max=100"`
	Format  string `json:"format" validate:"omitempty,oneof=png jpeg gif"`
}

// Check allows each operation only its own options.
func (d *fileProcessData) Check() []kinds.Problem {
	o := d.Options
	if o == nil {
		o = &fileOptions{}
	}
	given := map[string]bool{"width": o.Width != nil, "height": o.Height != nil, "quality": o.Quality != nil, "format": o.Format != ""}
	allowed := map[string][]string{
		"resize": {"width", "height"}, "compress": {"quality"}, "convert": {"format"}, "extract_text": nil,
	}[d.Operation]
	var problems []kinds.Problem
	for _, name := range []string{"width", "height", "quality", "format"} {
		if given[name] && !strings.Contains(" "+strings.Join(allowed, " ")+" ", " "+name+" ") {
			problems = append(problems, kinds.Problem{Field: "options." + name, Message: "is not an option of " + d.Operation})
		}
	}
	switch d.Operation {
	case "resize":
		if o.Width == nil && o.Height == nil {
			problems = append(problems, kinds.Problem{Field: "options", Message: "resize needs width, height or both"})
		}
	case "convert":
		if o.Format == "" {
			problems = append(problems, kinds.Problem{Field: "options.format", Message: "is required"})
		}
	}
	return problems
}

const (
	maxInputBytes    = 100 << 20
	maxImagePixels   = 50_000_000
	defaultJPEGScale = 90 // quality of JPEGs written by resize and convert
	defaultCompressQ = 75
	processedDir     = "processed"
)

// FileResult is FILE_PROCESS's result. Paths are relative to FILES_ROOT, like inputs.
type FileResult struct {
	OutputPath string `json:"outputPath"`
	Size       int64  `json:"size"`
	InputSize  int64  `json:"inputSize"`
	Format     string `json:"format,omitempty"`
	Width      int    `json:"width,omitempty"`
	Height     int    `json:"height,omitempty"`
	Chars      *int64 `json:"chars,omitempty"` // extract_text: characters written
}

type fileHandler struct{ deps Deps }

func fileProcessKind(deps Deps) kinds.Kind {
	return kinds.Define(TypeFileProcess, (&fileHandler{deps: deps}).run)
}

func (h *fileHandler) run(ctx context.Context, job *kinds.Job, d *fileProcessData) (any, error) {
	if d.Options == nil {
		d.Options = &fileOptions{}
	}
	root, err := openRoot("FILES_ROOT", h.deps.FilesRoot)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	in, info, err := openRegular(root, d.FilePath, maxInputBytes)
	if err != nil {
		return nil, err
	}
	defer in.Close()

	p := &fileJob{root: root, in: in, name: d.FilePath, jobID: job.ID, res: FileResult{InputSize: info.Size()}}
	switch d.Operation {
	case "resize":
		err = p.resize(d.Options)
	case "compress":
		err = p.compress(d.Options)
	case "convert":
		err = p.convert(d.Options.Format)
	case "extract_text":
		err = p.extractText(ctx)
	}
	if err != nil {
		return nil, err
	}
	h.deps.jobLog(job).Info("file processed", "operation", d.Operation, "output", p.res.OutputPath, "bytes", p.res.Size)
	return p.res, nil
}

// fileJob is one run of FILE_PROCESS on one open input.
type fileJob struct {
	root  *os.Root
	in    *os.File
	name  string
	jobID string
	res   FileResult
}

// outputName is processed/<input stem>-<job id>.<ext>: unique per job, and the same on a
// retry, which replaces the earlier attempt's file.
func (p *fileJob) outputName(ext string) string {
	base := path.Base(strings.ReplaceAll(p.name, `\`, "/"))
	stem := strings.TrimSuffix(base, path.Ext(base))
	return processedDir + "/" + safeName(stem) + "-" + safeName(p.jobID) + ext
}

// write creates the output atomically through fill.
func (p *fileJob) write(ext string, fill func(w io.Writer) error) error {
	name := p.outputName(ext)
	out, err := createAtomic(p.root, name)
	if err != nil {
		return err
	}
	defer out.Abort()
	counted := &countingWriter{w: out}
	if err := fill(counted); err != nil {
		if kinds.IsPermanent(err) {
			return err
		}
		return fileError("write", name, err)
	}
	if err := out.Commit(); err != nil {
		return err
	}
	p.res.OutputPath, p.res.Size = name, counted.n
	return nil
}

// decodeImage checks the size the header announces before decoding, so a small file
// cannot expand into gigabytes of pixels.
func (p *fileJob) decodeImage() (image.Image, string, error) {
	cfg, format, err := image.DecodeConfig(p.in)
	if err != nil {
		return nil, "", kinds.Permanentf("%s is not a PNG, JPEG or GIF image: %w", p.name, err)
	}
	if int64(cfg.Width)*int64(cfg.Height) > maxImagePixels {
		return nil, "", kinds.Permanentf("%s is %dx%d, more than %d pixels", p.name, cfg.Width, cfg.Height, maxImagePixels)
	}
	if _, err := p.in.Seek(0, io.SeekStart); err != nil {
		return nil, "", fileError("seek", p.name, err)
	}
	img, format, err := image.Decode(p.in)
	if err != nil {
		return nil, "", kinds.Permanentf("decode %s: %w", p.name, err)
	}
	return img, format, nil
}

func (p *fileJob) resize(o *fileOptions) error {
	img, format, err := p.decodeImage()
	if err != nil {
		return err
	}
	b := img.Bounds()
	w, h := fitSize(b.Dx(), b.Dy(), o.Width, o.Height)
	if int64(w)*int64(h) > maxImagePixels {
		return kinds.Permanentf("%dx%d is more than %d pixels", w, h, maxImagePixels)
	}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.CatmullRom.Scale(dst, dst.Bounds(), img, b, draw.Src, nil)
	return p.encodeImage(dst, format, defaultJPEGScale)
}

// fitSize keeps the aspect ratio: one side given sets the scale; both given make a box
// the image fits inside.
func fitSize(w, h int, width, height *int) (int, int) {
	scale := math.Inf(1)
	if width != nil {
		scale = float64(*width) / float64(w)
	}
	if height != nil {
		scale = min(scale, float64(*height)/float64(h))
	}
	return max(1, int(math.Round(float64(w)*scale))), max(1, int(math.Round(float64(h)*scale)))
}

func (p *fileJob) encodeImage(img image.Image, format string, quality int) error {
	b := img.Bounds()
	p.res.Width, p.res.Height, p.res.Format = b.Dx(), b.Dy(), format
	switch format {
	case "jpeg":
		return p.write(".jpg", func(w io.Writer) error {
			return jpeg.Encode(w, flatten(img), &jpeg.Options{Quality: quality})
		})
	case "gif":
		return p.write(".gif", func(w io.Writer) error { return gif.Encode(w, img, nil) })
	default:
		p.res.Format = "png"
		return p.write(".png", func(w io.Writer) error { return png.Encode(w, img) })
	}
}

// flatten paints an image with transparency on white: JPEG has no alpha, and dropping it
// would turn transparent pixels black.
func flatten(img image.Image) image.Image {
	if o, ok := img.(interface{ Opaque() bool }); ok && o.Opaque() {
		return img
	}
	dst := image.NewRGBA(img.Bounds())
	draw.Draw(dst, dst.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	draw.Draw(dst, dst.Bounds(), img, img.Bounds().Min, draw.Over)
	return dst
}

func (p *fileJob) convert(format string) error {
	img, _, err := p.decodeImage()
	if err != nil {
		return err
	}
	return p.encodeImage(img, format, defaultJPEGScale)
}

// compress re-encodes JPEG at the asked quality and PNG at the best compression; any
// other file is gzipped.
func (p *fileJob) compress(o *fileOptions) error {
	quality := defaultCompressQ
	if o.Quality != nil {
		quality = *o.Quality
	}
	_, format, err := image.DecodeConfig(p.in)
	if _, serr := p.in.Seek(0, io.SeekStart); serr != nil {
		return fileError("seek", p.name, serr)
	}
	switch {
	case err == nil && format == "jpeg":
		img, _, err := p.decodeImage()
		if err != nil {
			return err
		}
		return p.encodeImage(img, "jpeg", quality)
	case err == nil && format == "png":
		img, _, err := p.decodeImage()
		if err != nil {
			return err
		}
		b := img.Bounds()
		p.res.Width, p.res.Height, p.res.Format = b.Dx(), b.Dy(), "png"
		enc := png.Encoder{CompressionLevel: png.BestCompression}
		return p.write(".png", func(w io.Writer) error { return enc.Encode(w, img) })
	}
	base := path.Base(strings.ReplaceAll(p.name, `\`, "/"))
	p.res.Format = "gzip"
	return p.write(path.Ext(base)+".gz", func(w io.Writer) error {
		zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
		if err != nil {
			return err
		}
		zw.Name = base
		if _, err := io.Copy(zw, io.LimitReader(p.in, maxInputBytes)); err != nil {
			return err
		}
		return zw.Close()
	})
}

// errPDFUnsupported: no well-kept pure-Go library extracts PDF text (pdfcpu, the one
// available, extracts content streams, not text), and cgo libraries are not an option.
var errPDFUnsupported = errors.New("extract_text does not support PDF files")

func (p *fileJob) extractText(ctx context.Context) error {
	kind := ""
	switch strings.ToLower(path.Ext(p.name)) {
	case ".txt", ".text", ".log", ".csv", ".tsv":
		kind = "plain"
	case ".md", ".markdown":
		kind = "markdown"
	case ".html", ".htm", ".xhtml":
		kind = "html"
	case ".pdf":
		return kinds.Permanent(errPDFUnsupported)
	default:
		head := make([]byte, 512)
		n, err := io.ReadFull(p.in, head)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return fileError("read", p.name, err)
		}
		if _, err := p.in.Seek(0, io.SeekStart); err != nil {
			return fileError("seek", p.name, err)
		}
		switch ct := http.DetectContentType(head[:n]); {
		case strings.HasPrefix(ct, "text/html"):
			kind = "html"
		case strings.HasPrefix(ct, "text/plain"):
			kind = "plain"
		case ct == "application/pdf":
			return kinds.Permanent(errPDFUnsupported)
		default:
			return kinds.Permanentf("extract_text supports plain text, Markdown and HTML; %s is %s", p.name, ct)
		}
	}
	p.res.Format = "text"
	in := bufio.NewReaderSize(io.LimitReader(p.in, maxInputBytes), 64<<10)
	return p.write(".txt", func(w io.Writer) error {
		out := &textSink{w: bufio.NewWriterSize(w, 64<<10)}
		var err error
		switch kind {
		case "html":
			err = htmlToText(ctx, in, out)
		case "markdown":
			err = markdownToText(ctx, in, out)
		default:
			err = plainText(ctx, in, out)
		}
		if err != nil {
			return err
		}
		if err := out.finish(); err != nil {
			return err
		}
		p.res.Chars = &out.chars
		return nil
	})
}
