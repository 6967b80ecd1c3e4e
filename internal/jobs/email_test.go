package jobs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/big"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/kinds"
	"github.com/pgqueue/queue/internal/testutil"
)

// mimePart is one leaf of a parsed message.
type mimePart struct {
	contentType string
	filename    string
	body        []byte
}

// parseMIME reads a whole message and returns its header and its leaf parts, decoded.
func parseMIME(t *testing.T, raw []byte) (mail.Header, []mimePart) {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	require.NoError(t, err)
	var parts []mimePart
	var walk func(header map[string][]string, body io.Reader)
	walk = func(header map[string][]string, body io.Reader) {
		get := func(k string) string {
			if v := header[k]; len(v) > 0 {
				return v[0]
			}
			return ""
		}
		mediaType, params, err := mime.ParseMediaType(get("Content-Type"))
		require.NoError(t, err)
		if strings.HasPrefix(mediaType, "multipart/") {
			mr := multipart.NewReader(body, params["boundary"])
			for {
				p, err := mr.NextRawPart()
				if errors.Is(err, io.EOF) {
					return
				}
				require.NoError(t, err)
				walk(p.Header, p)
			}
		}
		var r io.Reader = body
		switch strings.ToLower(get("Content-Transfer-Encoding")) {
		case "quoted-printable":
			r = quotedprintable.NewReader(body)
		case "base64":
			r = base64.NewDecoder(base64.StdEncoding, body)
		}
		b, err := io.ReadAll(r)
		require.NoError(t, err)
		_, dparams, _ := mime.ParseMediaType(get("Content-Disposition"))
		parts = append(parts, mimePart{contentType: mediaType, filename: dparams["filename"], body: b})
	}
	walk(msg.Header, msg.Body)
	return msg.Header, parts
}

func partOf(t *testing.T, parts []mimePart, contentType string) mimePart {
	t.Helper()
	for _, p := range parts {
		if p.contentType == contentType && p.filename == "" {
			return p
		}
	}
	t.Fatalf("no %s part in %+v", contentType, parts)
	return mimePart{}
}

func emailJobData(attachments ...obj) obj {
	d := obj{
		"to": "ann@example.com", "subject": "Welcome aboard", "template": "welcome",
		"variables": obj{"name": `Ann <script>alert("x")</script> & Co`, "appName": "Acme"},
	}
	if len(attachments) > 0 {
		d["attachments"] = attachments
	}
	return d
}

func TestEmailFileTransportWritesMIME(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	report := bytes.Repeat([]byte{0, 1, 2, 250, 251, 'x', '\n'}, 3000) // binary, needs base64
	writeFile(t, b.cfg.FilesRoot, "reports/q1.bin", report)
	h := emailKind(b.deps)

	res, err := run(t, h, emailJobData(obj{"filename": "report.bin", "path": "reports/q1.bin"}))
	require.NoError(t, err)
	r := res.(EmailResult)
	require.Equal(t, "file", r.Transport)
	require.Equal(t, []string{"ann@example.com"}, r.Recipients)
	require.NotEmpty(t, r.MessageID)
	require.Equal(t, b.cfg.MailDir, filepath.Dir(r.Path))

	raw, err := os.ReadFile(r.Path)
	require.NoError(t, err)
	header, parts := parseMIME(t, raw)
	require.Equal(t, "Welcome aboard", header.Get("Subject"))
	require.Equal(t, "<"+r.MessageID+">", header.Get("Message-Id"))
	to, err := header.AddressList("To")
	require.NoError(t, err)
	require.Equal(t, "ann@example.com", to[0].Address)
	from, err := header.AddressList("From")
	require.NoError(t, err)
	require.Equal(t, "queue@localhost", from[0].Address)

	text := string(partOf(t, parts, "text/plain").body)
	html := string(partOf(t, parts, "text/html").body)
	require.Contains(t, text, `Welcome, Ann <script>alert("x")</script> & Co!`, "the text part is plain text, unescaped")
	require.Contains(t, html, "Welcome, Ann &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co!", "variables are escaped in HTML")
	require.NotContains(t, html, "<script>")
	require.Contains(t, html, "Thank you for joining Acme.")

	var attached []mimePart
	for _, p := range parts {
		if p.filename != "" {
			attached = append(attached, p)
		}
	}
	require.Len(t, attached, 1)
	require.Equal(t, "report.bin", attached[0].filename)
	require.Equal(t, report, attached[0].body)
	// No temporary file is left behind.
	entries, err := os.ReadDir(b.cfg.MailDir)
	require.NoError(t, err)
	require.Len(t, entries, 1)
}

func TestEmailBuiltinTemplatesRender(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	h := emailKind(b.deps)
	for _, name := range []string{"welcome", "security_alert", "test"} {
		res, err := run(t, h, obj{"to": "x@example.com", "subject": name, "template": name})
		require.NoError(t, err, name)
		raw, err := os.ReadFile(res.(EmailResult).Path)
		require.NoError(t, err)
		_, parts := parseMIME(t, raw)
		require.NotEmpty(t, partOf(t, parts, "text/plain").body, name)
		require.NotEmpty(t, partOf(t, parts, "text/html").body, name)
		require.NotContains(t, string(raw), "<no value>", name)
	}
}

func TestEmailTemplatesDirOverridesBuiltin(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	writeFile(t, b.cfg.TemplatesDir, "welcome.html", []byte(`<p>Custom hello {{.name}}</p>`))
	writeFile(t, b.cfg.TemplatesDir, "invoice.txt", []byte(`Invoice {{.number}}`))
	h := emailKind(b.deps)

	res, err := run(t, h, obj{"to": "x@example.com", "subject": "s", "template": "welcome", "variables": obj{"name": "<b>Bo</b>"}})
	require.NoError(t, err)
	raw, err := os.ReadFile(res.(EmailResult).Path)
	require.NoError(t, err)
	_, parts := parseMIME(t, raw)
	require.Equal(t, "<p>Custom hello &lt;b&gt;Bo&lt;/b&gt;</p>", string(partOf(t, parts, "text/html").body))
	require.Contains(t, string(partOf(t, parts, "text/plain").body), "Welcome, <b>Bo</b>!", "the part not overridden stays built in")

	// A template only in the folder, with a text part only.
	res, err = run(t, h, obj{"to": "x@example.com", "subject": "s", "template": "invoice", "variables": obj{"number": 12345678901234567}})
	require.NoError(t, err)
	raw, err = os.ReadFile(res.(EmailResult).Path)
	require.NoError(t, err)
	_, parts = parseMIME(t, raw)
	require.Len(t, parts, 1)
	require.Equal(t, "Invoice 12345678901234567", string(parts[0].body), "numbers keep their digits")
}

func TestEmailPermanentFailures(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	outside := t.TempDir()
	writeFile(t, outside, "secret.txt", []byte("secret"))
	require.NoError(t, os.Symlink(filepath.Join(outside, "secret.txt"), filepath.Join(b.cfg.FilesRoot, "link.txt")))
	writeFile(t, b.cfg.TemplatesDir, "broken.html", []byte(`{{.name`))
	h := emailKind(b.deps)

	cases := map[string]obj{
		"unknown template":   {"to": "x@example.com", "subject": "s", "template": "nope"},
		"broken template":    {"to": "x@example.com", "subject": "s", "template": "broken"},
		"missing attachment": emailJobData(obj{"filename": "a", "path": "missing.pdf"}),
		"escaping symlink":   emailJobData(obj{"filename": "a", "path": "link.txt"}),
		"folder attachment":  emailJobData(obj{"filename": "a", "path": "."}),
	}
	for name, data := range cases {
		_, err := run(t, h, data)
		require.Error(t, err, name)
		require.True(t, kinds.IsPermanent(err), "%s: %v", name, err)
	}
	entries, err := os.ReadDir(b.cfg.MailDir)
	require.NoError(t, err)
	require.Empty(t, entries, "nothing is written for a failed message")
}

// smtpSink is a real SMTP server (go-smtp) on loopback that keeps what it receives.
type smtpSink struct {
	addr string
	mu   sync.Mutex
	msgs []smtpMessage
	// rcptErr, when set, is the reply to RCPT TO.
	rcptErr error
	tls     bool // set when a message arrived over TLS
}

type smtpMessage struct {
	from string
	to   []string
	data []byte
}

type smtpSession struct {
	sink *smtpSink
	conn *smtp.Conn
	msg  smtpMessage
}

func (s *smtpSession) Reset()        { s.msg = smtpMessage{} }
func (s *smtpSession) Logout() error { return nil }
func (s *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	s.msg.from = from
	return nil
}

func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.sink.rcptErr != nil {
		return s.sink.rcptErr
	}
	s.msg.to = append(s.msg.to, to)
	return nil
}

func (s *smtpSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.msg.data = b
	s.sink.mu.Lock()
	defer s.sink.mu.Unlock()
	s.sink.msgs = append(s.sink.msgs, s.msg)
	if _, ok := s.conn.TLSConnectionState(); ok {
		s.sink.tls = true
	}
	return nil
}

func startSMTP(t *testing.T, tlsConfig *tls.Config, rcptErr error) *smtpSink {
	t.Helper()
	sink := &smtpSink{rcptErr: rcptErr}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &smtpSession{sink: sink, conn: c}, nil
	}))
	srv.Domain = "localhost"
	srv.TLSConfig = tlsConfig
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	sink.addr = l.Addr().String()
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return sink
}

func (s *smtpSink) received() []smtpMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]smtpMessage(nil), s.msgs...)
}

func smtpEnv(sink *smtpSink, mode string) map[string]string {
	host, port, _ := net.SplitHostPort(sink.addr)
	return map[string]string{"SMTP_HOST": host, "SMTP_PORT": port, "SMTP_TLS": mode, "SMTP_FROM": "Queue <noreply@example.com>"}
}

func TestEmailSMTPDeliveryArrivesIntact(t *testing.T) {
	t.Parallel()
	sink := startSMTP(t, nil, nil)
	b := setup(t, setupOpts{env: smtpEnv(sink, "none")})
	attachment := []byte("col1,col2\n1,2\n")
	writeFile(t, b.cfg.FilesRoot, "a.csv", attachment)
	h := emailKind(b.deps)

	res, err := run(t, h, emailJobData(obj{"filename": "numbers.csv", "path": "a.csv"}))
	require.NoError(t, err)
	r := res.(EmailResult)
	require.Equal(t, "smtp", r.Transport)
	require.Empty(t, r.Path)

	msgs := sink.received()
	require.Len(t, msgs, 1)
	require.Equal(t, "noreply@example.com", msgs[0].from)
	require.Equal(t, []string{"ann@example.com"}, msgs[0].to)
	header, parts := parseMIME(t, msgs[0].data)
	require.Equal(t, "Welcome aboard", header.Get("Subject"))
	require.Equal(t, "<"+r.MessageID+">", header.Get("Message-Id"))
	require.Contains(t, string(partOf(t, parts, "text/html").body), "Ann &lt;script&gt;")
	require.Contains(t, string(partOf(t, parts, "text/plain").body), `Ann <script>alert("x")</script>`)
	require.Equal(t, "numbers.csv", parts[len(parts)-1].filename)
	require.Equal(t, attachment, parts[len(parts)-1].body)
}

// selfSignedTLS returns a server config for 127.0.0.1 and a pool that trusts it.
func selfSignedTLS(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}, pool
}

func TestEmailSMTPStartTLS(t *testing.T) {
	t.Parallel()
	serverTLS, roots := selfSignedTLS(t)
	sink := startSMTP(t, serverTLS, nil)
	b := setup(t, setupOpts{env: smtpEnv(sink, "starttls")})
	h := kinds.Define(TypeEmailSend, (&emailHandler{deps: b.deps, rootCAs: roots}).run)

	_, err := run(t, h, obj{"to": "bo@example.com", "subject": "Over TLS", "template": "test"})
	require.NoError(t, err)
	require.Len(t, sink.received(), 1)
	require.True(t, sink.tls, "the message travelled over STARTTLS")
}

func TestEmailSMTPStartTLSIsRequired(t *testing.T) {
	t.Parallel()
	sink := startSMTP(t, nil, nil) // offers no STARTTLS
	b := setup(t, setupOpts{env: smtpEnv(sink, "starttls")})
	h := emailKind(b.deps)

	_, err := run(t, h, obj{"to": "bo@example.com", "subject": "Secret", "template": "test"})
	require.ErrorContains(t, err, "STARTTLS")
	require.Empty(t, sink.received(), "nothing is sent in plain text when STARTTLS is required")
}

func TestEmailSMTPErrorsAreClassified(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		code      int
		permanent bool
	}{{550, true}, {451, false}} {
		t.Run(strconv.Itoa(c.code), func(t *testing.T) {
			t.Parallel()
			sink := startSMTP(t, nil, &smtp.SMTPError{Code: c.code, EnhancedCode: smtp.EnhancedCode{c.code / 100, 1, 1}, Message: "mailbox says no"})
			b := setup(t, setupOpts{env: smtpEnv(sink, "none")})
			_, err := run(t, emailKind(b.deps), obj{"to": "bo@example.com", "subject": "s", "template": "test"})
			require.Error(t, err)
			require.Equal(t, c.permanent, kinds.IsPermanent(err), "%v", err)
			require.Contains(t, err.Error(), fmt.Sprint(c.code))
		})
	}

	// Nobody listening: the connection is refused, which may pass.
	port := strconv.Itoa(testutil.FreePort(t))
	b := setup(t, setupOpts{env: map[string]string{"SMTP_HOST": "127.0.0.1", "SMTP_PORT": port, "SMTP_TLS": "none"}})
	_, err := run(t, emailKind(b.deps), obj{"to": "bo@example.com", "subject": "s", "template": "test"})
	require.Error(t, err)
	require.False(t, kinds.IsPermanent(err), "%v", err)
}
