package jobs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io"
	"io/fs"
	"net/mail"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	texttemplate "text/template"
	"time"

	gomail "github.com/wneessen/go-mail"

	"github.com/pgqueue/queue/internal/kinds"
)

// emailData is EMAIL_SEND's data.
type emailData struct {
	UserID      *string           `json:"userId" validate:"omitnil,min=1,max=128"`
	To          string            `json:"to" validate:"required,max=254,email"`
	Subject     string            `json:"subject" validate:"required,min=1,max=998,nocrlf"`
	Template    string            `json:"template" validate:"required"`
	Variables   map[string]any    `json:"variables"`
	Attachments []emailAttachment `json:"attachments" validate:"omitempty,max=10,dive"`
}

type emailAttachment struct {
	Filename string `json:"filename" validate:"required,max=255,filename"`
	Path     string `json:"path" validate:"required,relpath"`
}

var templateName = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)

// Check is the rule the tags cannot say.
func (d *emailData) Check() []kinds.Problem {
	if d.Template != "" && !templateName.MatchString(d.Template) {
		return []kinds.Problem{{Field: "template", Message: "must match ^[a-z0-9_-]{1,64}$"}}
	}
	return nil
}

const (
	// maxAttachmentBytes bounds all attachments of one message together; most mail
	// servers refuse messages much larger.
	maxAttachmentBytes = 25 << 20
	maxTemplateBytes   = 1 << 20
	smtpTimeout        = 30 * time.Second
)

//go:embed templates/*.html templates/*.txt
var builtinTemplates embed.FS

// EmailResult is EMAIL_SEND's result.
type EmailResult struct {
	MessageID  string   `json:"messageId"`
	Recipients []string `json:"recipients"`
	Transport  string   `json:"transport"`      // file or smtp
	Path       string   `json:"path,omitempty"` // the .eml written by the file transport
}

type emailHandler struct {
	deps Deps
	// rootCAs replaces the system roots for SMTP TLS; set only by tests.
	rootCAs *x509.CertPool
}

func emailKind(deps Deps) kinds.Kind {
	return kinds.Define(TypeEmailSend, (&emailHandler{deps: deps}).run)
}

func (h *emailHandler) run(ctx context.Context, job *kinds.Job, d *emailData) (any, error) {
	msg, err := h.buildMessage(job, d)
	if err != nil {
		return nil, err
	}
	res := EmailResult{Recipients: []string{d.To}}
	res.MessageID = strings.Trim(msg.GetMessageID(), "<>")
	if h.deps.SMTP.Host == "" {
		res.Transport = "file"
		res.Path, err = h.writeFile(job, msg)
	} else {
		res.Transport = "smtp"
		err = h.sendSMTP(ctx, msg)
	}
	if err != nil {
		return nil, err
	}
	h.deps.jobLog(job).Info("e-mail sent", "transport", res.Transport, "message_id", res.MessageID)
	return res, nil
}

func (h *emailHandler) buildMessage(job *kinds.Job, d *emailData) (*gomail.Msg, error) {
	htmlBody, textBody, err := h.render(d.Template, d.Variables)
	if err != nil {
		return nil, err
	}
	from, err := mail.ParseAddress(h.deps.SMTP.From)
	if err != nil {
		return nil, kinds.Permanentf("SMTP_FROM %q is not an e-mail address: %w", h.deps.SMTP.From, err)
	}
	msg := gomail.NewMsg()
	msg.FromMailAddress(from)
	if err := msg.To(d.To); err != nil {
		return nil, kinds.Permanentf("to: %w", err)
	}
	msg.Subject(d.Subject)
	msg.SetDate()
	domain := from.Address[strings.LastIndex(from.Address, "@")+1:]
	msg.SetMessageIDWithValue(safeName(job.ID) + "." + randomHex(8) + "@" + domain)
	switch {
	case textBody != "" && htmlBody != "":
		msg.SetBodyString(gomail.TypeTextPlain, textBody)
		msg.AddAlternativeString(gomail.TypeTextHTML, htmlBody)
	case htmlBody != "":
		msg.SetBodyString(gomail.TypeTextHTML, htmlBody)
	default:
		msg.SetBodyString(gomail.TypeTextPlain, textBody)
	}
	if len(d.Attachments) > 0 {
		if err := h.attach(msg, d.Attachments); err != nil {
			return nil, err
		}
	}
	return msg, nil
}

// render fills in both parts. Each part comes from TEMPLATES_DIR when the folder has it,
// else from the built-in set; a template with neither part is unknown.
func (h *emailHandler) render(name string, vars map[string]any) (htmlBody, textBody string, err error) {
	if vars == nil {
		vars = map[string]any{}
	}
	htmlSrc, err := h.templateSource(name + ".html")
	if err != nil {
		return "", "", err
	}
	textSrc, err := h.templateSource(name + ".txt")
	if err != nil {
		return "", "", err
	}
	if htmlSrc == "" && textSrc == "" {
		return "", "", kinds.Permanentf("unknown template %q", name)
	}
	var buf bytes.Buffer
	if htmlSrc != "" {
		// html/template escapes every variable for its context (text, attribute, URL).
		t, err := htmltemplate.New(name).Option("missingkey=zero").Parse(htmlSrc)
		if err != nil {
			return "", "", kinds.Permanentf("template %s.html: %w", name, err)
		}
		if err := t.Execute(&buf, vars); err != nil {
			return "", "", kinds.Permanentf("template %s.html: %w", name, err)
		}
		htmlBody = buf.String()
	}
	if textSrc != "" {
		buf.Reset()
		t, err := texttemplate.New(name).Option("missingkey=zero").Parse(textSrc)
		if err != nil {
			return "", "", kinds.Permanentf("template %s.txt: %w", name, err)
		}
		if err := t.Execute(&buf, vars); err != nil {
			return "", "", kinds.Permanentf("template %s.txt: %w", name, err)
		}
		textBody = buf.String()
	}
	return htmlBody, textBody, nil
}

// templateSource reads one template file, from TEMPLATES_DIR first; "" when neither
// the folder nor the built-in set has it.
func (h *emailHandler) templateSource(file string) (string, error) {
	if dir := h.deps.TemplatesDir; dir != "" {
		root, err := os.OpenRoot(dir)
		if err == nil {
			defer root.Close()
			f, _, err := openRegular(root, file, maxTemplateBytes)
			if err == nil {
				defer f.Close()
				b, err := io.ReadAll(f)
				if err != nil {
					return "", fileError("read template", file, err)
				}
				return string(b), nil
			}
			if !errors.Is(err, fs.ErrNotExist) {
				return "", err
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", fileError("open TEMPLATES_DIR", dir, err)
		}
	}
	b, err := builtinTemplates.ReadFile("templates/" + file)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	return string(b), err
}

func (h *emailHandler) attach(msg *gomail.Msg, attachments []emailAttachment) error {
	root, err := openRoot("FILES_ROOT", h.deps.FilesRoot)
	if err != nil {
		return err
	}
	defer root.Close()
	var total int64
	for _, a := range attachments {
		f, info, err := openRegular(root, a.Path, maxAttachmentBytes)
		if err != nil {
			return fmt.Errorf("attachment: %w", err)
		}
		total += info.Size()
		if total > maxAttachmentBytes {
			f.Close()
			return kinds.Permanentf("attachments exceed %d bytes together", maxAttachmentBytes)
		}
		// AttachReader copies the content now, so the file can be closed at once.
		err = msg.AttachReader(a.Filename, io.LimitReader(f, maxAttachmentBytes))
		f.Close()
		if err != nil {
			return fileError("read attachment", a.Path, err)
		}
	}
	return nil
}

// writeFile is the default transport: the message as a .eml file in MAIL_DIR.
func (h *emailHandler) writeFile(job *kinds.Job, msg *gomail.Msg) (string, error) {
	dir := h.deps.MailDir
	if dir == "" {
		return "", kinds.Permanentf("MAIL_DIR is not configured")
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fileError("create MAIL_DIR", dir, err)
	}
	root, err := openRoot("MAIL_DIR", dir)
	if err != nil {
		return "", err
	}
	defer root.Close()
	name := fmt.Sprintf("%s-%s-%s.eml", time.Now().UTC().Format("20060102T150405.000Z"), safeName(job.ID), randomHex(4))
	f, err := createAtomic(root, name)
	if err != nil {
		return "", err
	}
	defer f.Abort()
	if _, err := msg.WriteTo(f); err != nil {
		return "", fileError("write", name, err)
	}
	if err := f.Commit(); err != nil {
		return "", err
	}
	return filepath.Join(dir, name), nil
}

func (h *emailHandler) sendSMTP(ctx context.Context, msg *gomail.Msg) error {
	cfg := h.deps.SMTP
	tlsConfig := &tls.Config{ServerName: cfg.Host, MinVersion: tls.VersionTLS12, RootCAs: h.rootCAs}
	opts := []gomail.Option{
		gomail.WithPort(cfg.Port),
		gomail.WithTimeout(smtpTimeout),
		gomail.WithTLSConfig(tlsConfig),
	}
	switch cfg.TLS {
	case "implicit":
		opts = append(opts, gomail.WithSSL())
	case "none":
		// config refuses "none" for a host that is not loopback.
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	default:
		// STARTTLS is required: a server that does not offer it gets nothing in plain text.
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	}
	if cfg.Username != "" {
		opts = append(opts, gomail.WithSMTPAuth(gomail.SMTPAuthAutoDiscover),
			gomail.WithUsername(cfg.Username), gomail.WithPassword(cfg.Password))
	}
	client, err := gomail.NewClient(cfg.Host, opts...)
	if err != nil {
		return kinds.Permanentf("SMTP client: %w", err)
	}
	if err := client.DialAndSendWithContext(ctx, msg); err != nil {
		return classifySMTPError(err)
	}
	return nil
}

// classifySMTPError makes a 5xx reply permanent; a 4xx reply, a timeout or a refused
// connection may pass and is retried.
func classifySMTPError(err error) error {
	err = fmt.Errorf("smtp: %w", err)
	var sendErr *gomail.SendError
	if errors.As(err, &sendErr) {
		if sendErr.IsTemp() {
			return err
		}
		if code := sendErr.ErrorCode(); code >= 500 && code < 600 {
			return kinds.Permanent(err)
		}
	}
	var protoErr *textproto.Error
	if errors.As(err, &protoErr) && protoErr.Code >= 500 && protoErr.Code < 600 {
		return kinds.Permanent(err)
	}
	return err
}
