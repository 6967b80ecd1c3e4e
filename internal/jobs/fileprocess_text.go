package jobs

import (
	"bufio"
	"context"
	"errors"
	"io"
	"regexp"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// textSink writes extracted text, collapsing runs of white space and of blank lines the
// way a reader expects; invalid UTF-8 becomes U+FFFD.
type textSink struct {
	w        *bufio.Writer
	chars    int64
	started  bool // something was written
	space    bool // a space is due before the next word
	newlines int  // line breaks due before the next word (at most 2: a blank line)
}

func (s *textSink) lineBreak(n int) {
	if s.started {
		s.newlines = max(s.newlines, n)
	}
}

func (s *textSink) emit(t string) error {
	if t == "" {
		return nil
	}
	if s.newlines > 0 {
		if _, err := s.w.WriteString(strings.Repeat("\n", s.newlines)); err != nil {
			return err
		}
		s.chars += int64(s.newlines)
	} else if s.space && s.started {
		if err := s.w.WriteByte(' '); err != nil {
			return err
		}
		s.chars++
	}
	s.newlines, s.space, s.started = 0, false, true
	t = strings.ToValidUTF8(t, "\uFFFD")
	s.chars += int64(utf8.RuneCountInString(t))
	_, err := s.w.WriteString(t)
	return err
}

// flow writes running text: white space between words becomes one space.
func (s *textSink) flow(t string) error {
	if t == "" {
		return nil
	}
	words := strings.Fields(t)
	if len(words) == 0 {
		s.space = true
		return nil
	}
	if isSpace(t[0]) {
		s.space = true
	}
	for i, w := range words {
		if i > 0 {
			s.space = true
		}
		if err := s.emit(w); err != nil {
			return err
		}
	}
	if isSpace(t[len(t)-1]) {
		s.space = true
	}
	return nil
}

func isSpace(b byte) bool { return b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == '\f' }

// verbatim writes preformatted text line by line, keeping its spacing.
func (s *textSink) verbatim(t string) error {
	for i, line := range strings.Split(t, "\n") {
		if i > 0 {
			s.lineBreak(1)
			if !s.started {
				continue
			}
		}
		line = strings.TrimRight(line, "\r")
		if line == "" {
			continue
		}
		if err := s.emit(line); err != nil {
			return err
		}
	}
	return nil
}

func (s *textSink) finish() error {
	if s.started {
		if err := s.w.WriteByte('\n'); err != nil {
			return err
		}
		s.chars++
	}
	return s.w.Flush()
}

// plainText copies text, line by line.
func plainText(ctx context.Context, r *bufio.Reader, out *textSink) error {
	return eachLine(ctx, r, func(line string) error {
		if strings.TrimSpace(line) == "" {
			out.lineBreak(2)
			return nil
		}
		out.lineBreak(1)
		return out.emit(strings.TrimRight(line, " \t"))
	})
}

// eachLine calls fn for every line without its line ending; ctx is checked every 4096
// lines so a cancelled job stops.
func eachLine(ctx context.Context, r *bufio.Reader, fn func(string) error) error {
	for n := 0; ; n++ {
		if n%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		line, err := r.ReadString('\n')
		if line != "" {
			if ferr := fn(strings.TrimRight(line, "\r\n")); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

var (
	mdFence      = regexp.MustCompile("^\\s{0,3}(```|~~~)")
	mdHeading    = regexp.MustCompile(`^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$`)
	mdRule       = regexp.MustCompile(`^\s{0,3}([-*_=]\s*){3,}$`)
	mdQuote      = regexp.MustCompile(`^\s{0,3}(>\s?)+`)
	mdBullet     = regexp.MustCompile(`^(\s*)[*+-]\s+`)
	mdLinkDef    = regexp.MustCompile(`^\s{0,3}\[[^\]]+\]:\s+\S+`)
	mdImage      = regexp.MustCompile(`!\[([^\]]*)\]\([^)]*\)`)
	mdLink       = regexp.MustCompile(`\[([^\]]+)\](\([^)]*\)|\[[^\]]*\])`)
	mdCode       = regexp.MustCompile("`([^`]+)`")
	mdStrong     = regexp.MustCompile(`(\*\*|__)(\S(?:.*?\S)?)(\*\*|__)`)
	mdEmphasis   = regexp.MustCompile(`(^|[\s(])[*_](\S(?:.*?\S)?)[*_]([\s).,;:!?]|$)`)
	mdStrike     = regexp.MustCompile(`~~(.+?)~~`)
	mdInlineHTML = regexp.MustCompile(`</?[A-Za-z][^>]*>`)
)

// markdownToText drops Markdown's markup and keeps its words: headings, emphasis, links
// (their text), images (their alt text), quotes and code (verbatim).
func markdownToText(ctx context.Context, r *bufio.Reader, out *textSink) error {
	inFence := false
	return eachLine(ctx, r, func(line string) error {
		if mdFence.MatchString(line) {
			inFence = !inFence
			out.lineBreak(2)
			return nil
		}
		if inFence {
			out.lineBreak(1)
			if line == "" {
				return nil
			}
			return out.emit(line)
		}
		if strings.TrimSpace(line) == "" || mdRule.MatchString(line) || mdLinkDef.MatchString(line) {
			out.lineBreak(2)
			return nil
		}
		if m := mdHeading.FindStringSubmatch(line); m != nil {
			out.lineBreak(2)
			if err := out.emit(markdownInline(m[1])); err != nil {
				return err
			}
			out.lineBreak(2)
			return nil
		}
		line = mdQuote.ReplaceAllString(line, "")
		line = mdBullet.ReplaceAllString(line, "$1- ")
		out.lineBreak(1)
		return out.emit(strings.TrimRight(markdownInline(line), " \t"))
	})
}

func markdownInline(s string) string {
	s = mdImage.ReplaceAllString(s, "$1")
	s = mdLink.ReplaceAllString(s, "$1")
	s = mdCode.ReplaceAllString(s, "$1")
	s = mdStrong.ReplaceAllString(s, "$2")
	s = mdEmphasis.ReplaceAllString(s, "$1$2$3")
	s = mdStrike.ReplaceAllString(s, "$1")
	s = mdInlineHTML.ReplaceAllString(s, "")
	return html.UnescapeString(s)
}

// htmlToText walks the tokens (never building the whole tree): text outside script,
// style and the head, with block elements on their own lines.
func htmlToText(ctx context.Context, r io.Reader, out *textSink) error {
	z := html.NewTokenizer(r)
	skip, pre := 0, 0
	for n := 0; ; n++ {
		if n%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			if errors.Is(z.Err(), io.EOF) {
				return nil
			}
			return z.Err()
		case html.TextToken:
			if skip > 0 {
				continue
			}
			var err error
			if pre > 0 {
				err = out.verbatim(string(z.Text()))
			} else {
				err = out.flow(string(z.Text()))
			}
			if err != nil {
				return err
			}
		case html.StartTagToken, html.EndTagToken, html.SelfClosingTagToken:
			name, _ := z.TagName()
			a := atom.Lookup(name)
			start := tt != html.EndTagToken
			switch a {
			case atom.Script, atom.Style, atom.Head, atom.Noscript, atom.Template, atom.Svg, atom.Iframe, atom.Object:
				if tt == html.StartTagToken {
					skip++
				} else if tt == html.EndTagToken && skip > 0 {
					skip--
				}
				continue
			case atom.Pre, atom.Textarea:
				if tt == html.StartTagToken {
					pre++
				} else if tt == html.EndTagToken && pre > 0 {
					pre--
				}
				out.lineBreak(2)
			case atom.Br:
				out.lineBreak(1)
			case atom.Li, atom.Dt, atom.Dd, atom.Tr:
				out.lineBreak(1)
				if start && a == atom.Li && skip == 0 {
					if err := out.emit("-"); err != nil {
						return err
					}
					out.space = true
				}
			case atom.Td, atom.Th:
				if start {
					out.space = true
				}
			case atom.P, atom.Div, atom.H1, atom.H2, atom.H3, atom.H4, atom.H5, atom.H6,
				atom.Ul, atom.Ol, atom.Dl, atom.Table, atom.Blockquote, atom.Section, atom.Article,
				atom.Header, atom.Footer, atom.Nav, atom.Aside, atom.Main, atom.Figure, atom.Figcaption,
				atom.Form, atom.Fieldset, atom.Address, atom.Hr, atom.Title:
				out.lineBreak(2)
			}
		}
	}
}
