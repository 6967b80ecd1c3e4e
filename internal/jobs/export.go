package jobs

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/xuri/excelize/v2"

	"github.com/pgqueue/queue/internal/kinds"
)

// exportData is DATA_EXPORT's data.
type exportData struct {
	UserID     *string        `json:"userId" validate:"omitnil,min=1,max=128"`
	ExportType string         `json:"exportType" validate:"required,oneof=csv json xlsx"`
	Filters    *exportFilters `json:"filters" validate:"required"`
	Columns    []string       `json:"columns" validate:"omitnil,min=1,max=32,unique"`
}

type exportFilters struct {
	Source string `json:"source" validate:"omitempty,oneof=jobs job_events"`
	Type   string `json:"type" validate:"omitempty,max=64"`
	State  string `json:"state" validate:"omitempty,oneof=waiting delayed active completed failed cancelled"`
	From   string `json:"from" validate:"omitempty,rfc3339"`
	To     string `json:"to" validate:"omitempty,rfc3339"`
}

func (f *exportFilters) source() string {
	if f.Source == "" {
		return "jobs"
	}
	return f.Source
}

// Check holds the columns to the source's allow-list and the time range in order.
func (d *exportData) Check() []kinds.Problem {
	var problems []kinds.Problem
	if d.Filters == nil {
		return nil
	}
	src := exportSources[d.Filters.source()]
	for i, c := range d.Columns {
		if _, ok := src.column(c); !ok {
			names := make([]string, len(src.columns))
			for j, col := range src.columns {
				names[j] = col.name
			}
			problems = append(problems, kinds.Problem{
				Field:   fmt.Sprintf("columns[%d]", i),
				Message: fmt.Sprintf("must be a column of %s: %s", d.Filters.source(), strings.Join(names, ", ")),
			})
		}
	}
	from, errFrom := time.Parse(time.RFC3339, d.Filters.From)
	to, errTo := time.Parse(time.RFC3339, d.Filters.To)
	if errFrom == nil && errTo == nil && to.Before(from) {
		problems = append(problems, kinds.Problem{Field: "filters.to", Message: "must not be before filters.from"})
	}
	return problems
}

// ExportResult is DATA_EXPORT's result.
type ExportResult struct {
	Path    string   `json:"path"`
	Rows    int64    `json:"rows"`
	Bytes   int64    `json:"bytes"`
	Format  string   `json:"format"`
	Source  string   `json:"source"`
	Columns []string `json:"columns"`
}

// xlsxMaxRows is a worksheet's limit, less the header row.
const xlsxMaxRows = 1_048_576 - 1

type exportHandler struct{ deps Deps }

func exportKind(deps Deps) kinds.Kind {
	return kinds.Define(TypeDataExport, (&exportHandler{deps: deps}).run)
}

func (h *exportHandler) run(ctx context.Context, job *kinds.Job, d *exportData) (any, error) {
	if h.deps.Pool == nil {
		return nil, kinds.Permanent(errNotConfigured)
	}
	srcName := d.Filters.source()
	src := exportSources[srcName]
	cols := src.columns
	if len(d.Columns) > 0 {
		cols = make([]exportColumn, len(d.Columns))
		for i, name := range d.Columns {
			cols[i], _ = src.column(name)
		}
	}
	var from, to *time.Time
	if t, err := time.Parse(time.RFC3339, d.Filters.From); err == nil {
		from = &t
	}
	if t, err := time.Parse(time.RFC3339, d.Filters.To); err == nil {
		to = &t
	}
	q := buildExportQuery(src, cols, *d.Filters, from, to)

	var total int64
	if err := h.deps.Pool.QueryRow(ctx, q.countSQL, q.args...).Scan(&total); err != nil {
		return nil, fmt.Errorf("count rows to export: %w", err)
	}
	if d.ExportType == "xlsx" && total > xlsxMaxRows {
		return nil, kinds.Permanentf("%d rows do not fit in an xlsx sheet (at most %d); use csv or json", total, xlsxMaxRows)
	}

	root, err := openRoot("EXPORT_DIR", h.deps.ExportDir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	ext := d.ExportType
	name := fmt.Sprintf("export-%s-%s-%s-%s.%s", srcName, time.Now().UTC().Format("20060102T150405Z"),
		safeName(job.ID), randomHex(4), ext)
	file, err := createAtomic(root, name)
	if err != nil {
		return nil, err
	}
	defer file.Abort()

	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.name
	}
	counted := &countingWriter{w: file}
	var out rowWriter
	switch d.ExportType {
	case "csv":
		out = newCSVWriter(counted)
	case "json":
		out = newJSONWriter(counted)
	default:
		out, err = newXLSXWriter(counted, h.deps.ExportDir)
		if err != nil {
			return nil, fmt.Errorf("start xlsx: %w", err)
		}
	}
	defer out.discard()

	rows, err := h.streamRows(ctx, job, q, cols, names, total, out)
	if err != nil {
		return nil, err
	}
	if err := out.close(); err != nil {
		return nil, fileError("write", name, err)
	}
	if err := file.Commit(); err != nil {
		return nil, err
	}
	job.SetProgress(100)
	res := ExportResult{
		Path: filepath.Join(h.deps.ExportDir, name), Rows: rows, Bytes: counted.n,
		Format: d.ExportType, Source: srcName, Columns: names,
	}
	h.deps.jobLog(job).Info("export written", "path", res.Path, "rows", rows, "bytes", res.Bytes)
	return res, nil
}

// streamRows copies the query's rows into out one at a time: memory stays the same
// whatever the row count. Progress goes up to 99; 100 is set once the file is in place.
func (h *exportHandler) streamRows(ctx context.Context, job *kinds.Job, q exportQuery, cols []exportColumn, names []string, total int64, out rowWriter) (int64, error) {
	if err := out.header(names); err != nil {
		return 0, fmt.Errorf("write header: %w", err)
	}
	rows, err := h.deps.Pool.Query(ctx, q.selectSQL, q.args...)
	if err != nil {
		return 0, fmt.Errorf("export query: %w", err)
	}
	defer rows.Close()

	// One set of scan targets, reused for every row.
	texts := make([]*string, len(cols))
	ints := make([]*int64, len(cols))
	times := make([]*time.Time, len(cols))
	dest := make([]any, len(cols))
	for i, c := range cols {
		switch c.kind {
		case kindInt:
			dest[i] = &ints[i]
		case kindTime:
			dest[i] = &times[i]
		default:
			dest[i] = &texts[i]
		}
	}
	values := make([]any, len(cols))
	var n int64
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return n, fmt.Errorf("read export row: %w", err)
		}
		for i, c := range cols {
			values[i] = nil
			switch c.kind {
			case kindInt:
				if ints[i] != nil {
					values[i] = *ints[i]
				}
			case kindTime:
				if times[i] != nil {
					values[i] = *times[i]
				}
			case kindJSON:
				if texts[i] != nil {
					values[i] = jsonText(*texts[i])
				}
			default:
				if texts[i] != nil {
					values[i] = *texts[i]
				}
			}
		}
		if err := out.row(values); err != nil {
			return n, fileError("write", "export", err)
		}
		n++
		if n%1000 == 0 && total > 0 {
			job.SetProgress(int(min(99, n*100/total)))
		}
	}
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("export query: %w", err)
	}
	return n, nil
}

// jsonText is a jsonb value in its text form.
type jsonText string

const exportTimeFormat = "2006-01-02T15:04:05.000Z07:00"

// rowWriter writes one format. Values are nil, string, int64, time.Time or jsonText.
type rowWriter interface {
	header(names []string) error
	row(values []any) error
	close() error
	discard()
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

type csvWriter struct {
	buf    *bufio.Writer
	w      *csv.Writer
	record []string
}

func newCSVWriter(w io.Writer) *csvWriter {
	buf := bufio.NewWriterSize(w, 64<<10)
	return &csvWriter{buf: buf, w: csv.NewWriter(buf)}
}

func (c *csvWriter) header(names []string) error { return c.w.Write(names) }

func (c *csvWriter) row(values []any) error {
	c.record = c.record[:0]
	for _, v := range values {
		var s string
		switch v := v.(type) {
		case string:
			s = defuseFormula(v)
		case jsonText:
			s = string(v)
		case int64:
			s = strconv.FormatInt(v, 10)
		case time.Time:
			s = v.UTC().Format(exportTimeFormat)
		}
		c.record = append(c.record, s)
	}
	return c.w.Write(c.record)
}

// defuseFormula keeps a spreadsheet from running text as a formula (CSV injection): a
// value starting with = + - @ or a control character gets a leading apostrophe.
func defuseFormula(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

func (c *csvWriter) close() error {
	c.w.Flush()
	if err := c.w.Error(); err != nil {
		return err
	}
	return c.buf.Flush()
}

func (c *csvWriter) discard() {}

// jsonWriter writes one JSON array of objects, an element at a time.
type jsonWriter struct {
	buf   *bufio.Writer
	keys  [][]byte
	first bool
	line  []byte
}

func newJSONWriter(w io.Writer) *jsonWriter {
	return &jsonWriter{buf: bufio.NewWriterSize(w, 64<<10), first: true}
}

func (j *jsonWriter) header(names []string) error {
	for _, n := range names {
		k, _ := json.Marshal(n)
		j.keys = append(j.keys, k)
	}
	_, err := j.buf.WriteString("[")
	return err
}

func (j *jsonWriter) row(values []any) error {
	j.line = j.line[:0]
	if !j.first {
		j.line = append(j.line, ',')
	}
	j.first = false
	j.line = append(j.line, "\n{"...)
	for i, v := range values {
		if i > 0 {
			j.line = append(j.line, ',')
		}
		j.line = append(j.line, j.keys[i]...)
		j.line = append(j.line, ':')
		switch v := v.(type) {
		case nil:
			j.line = append(j.line, "null"...)
		case jsonText:
			j.line = append(j.line, v...)
		case int64:
			j.line = strconv.AppendInt(j.line, v, 10)
		case time.Time:
			j.line = append(j.line, '"')
			j.line = v.UTC().AppendFormat(j.line, exportTimeFormat)
			j.line = append(j.line, '"')
		case string:
			b, err := json.Marshal(v)
			if err != nil {
				return err
			}
			j.line = append(j.line, b...)
		}
	}
	j.line = append(j.line, '}')
	_, err := j.buf.Write(j.line)
	return err
}

func (j *jsonWriter) close() error {
	if _, err := j.buf.WriteString("\n]\n"); err != nil {
		return err
	}
	return j.buf.Flush()
}

func (j *jsonWriter) discard() {}

// xlsxWriter uses excelize's StreamWriter, which spills rows to a temporary file instead
// of keeping the sheet in memory.
type xlsxWriter struct {
	w    io.Writer
	file *excelize.File
	sw   *excelize.StreamWriter
	next int
	cell []any
}

func newXLSXWriter(w io.Writer, tmpDir string) (*xlsxWriter, error) {
	f := excelize.NewFile(excelize.Options{TmpDir: tmpDir})
	sw, err := f.NewStreamWriter("Sheet1")
	if err != nil {
		f.Close()
		return nil, err
	}
	return &xlsxWriter{w: w, file: f, sw: sw, next: 1}, nil
}

func (x *xlsxWriter) header(names []string) error {
	row := make([]any, len(names))
	for i, n := range names {
		row[i] = n
	}
	return x.put(row)
}

func (x *xlsxWriter) put(row []any) error {
	cell, err := excelize.CoordinatesToCellName(1, x.next)
	if err != nil {
		return err
	}
	x.next++
	return x.sw.SetRow(cell, row)
}

func (x *xlsxWriter) row(values []any) error {
	x.cell = x.cell[:0]
	for _, v := range values {
		switch v := v.(type) {
		case time.Time:
			// Text keeps the exact instant and zone; a sheet date would drop both.
			x.cell = append(x.cell, v.UTC().Format(exportTimeFormat))
		case jsonText:
			x.cell = append(x.cell, string(v))
		default:
			x.cell = append(x.cell, v)
		}
	}
	return x.put(x.cell)
}

func (x *xlsxWriter) close() error {
	if err := x.sw.Flush(); err != nil {
		return err
	}
	if err := x.file.Write(x.w); err != nil {
		return err
	}
	return x.file.Close()
}

func (x *xlsxWriter) discard() { _ = x.file.Close() }
