package jobs

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"

	"github.com/pgqueue/queue/internal/kinds"
)

// Every file a handler touches is opened through an os.Root on its configured folder, so
// neither "../" nor a symlink (even one swapped in after a check) leads outside it.

// fileError wraps a file-system error; it is permanent unless the cause may pass (a
// full descriptor table, an I/O hiccup). A missing file, a refused symlink or a
// permission problem does not fix itself.
func fileError(op, name string, err error) error {
	wrapped := fmt.Errorf("%s %s: %w", op, name, err)
	for _, transient := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOMEM, syscall.EAGAIN, syscall.EINTR, syscall.EIO, syscall.ENOSPC} {
		if errors.Is(err, transient) {
			return wrapped
		}
	}
	return kinds.Permanent(wrapped)
}

// openRoot opens a configured folder as a root.
func openRoot(what, dir string) (*os.Root, error) {
	if dir == "" {
		return nil, kinds.Permanentf("%s is not configured", what)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fileError("open "+what, dir, err)
	}
	return root, nil
}

// openRegular opens a regular file under root for reading and refuses anything larger
// than maxSize bytes (0: no limit). O_NONBLOCK keeps a FIFO from blocking the open; it
// changes nothing for regular files.
func openRegular(root *os.Root, name string, maxSize int64) (*os.File, fs.FileInfo, error) {
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fileError("open", name, err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fileError("stat", name, err)
	}
	if !info.Mode().IsRegular() {
		f.Close()
		return nil, nil, kinds.Permanentf("%s is not a regular file", name)
	}
	// os.Root keeps symlinks inside the root, but a hard link is the file itself: one
	// placed in the folder may name a file outside it. Files with more than one link are
	// refused.
	if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
		f.Close()
		return nil, nil, kinds.Permanentf("%s has %d hard links; files with more than one are refused", name, st.Nlink)
	}
	if maxSize > 0 && info.Size() > maxSize {
		f.Close()
		return nil, nil, kinds.Permanentf("%s is %d bytes, more than the limit of %d", name, info.Size(), maxSize)
	}
	return f, info, nil
}

// atomicFile is a file written under a temporary name and renamed into place on Commit,
// so a reader never sees half a file and a failed attempt leaves nothing behind.
type atomicFile struct {
	*os.File
	root       *os.Root
	tmp, final string
	done       bool
}

func createAtomic(root *os.Root, name string) (*atomicFile, error) {
	if i := strings.LastIndex(name, "/"); i > 0 {
		if err := root.MkdirAll(name[:i], 0o750); err != nil {
			return nil, fileError("create folder", name[:i], err)
		}
	}
	tmp := name + ".tmp-" + randomHex(6)
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return nil, fileError("create", tmp, err)
	}
	return &atomicFile{File: f, root: root, tmp: tmp, final: name}, nil
}

// Commit flushes the file to disk and gives it its final name.
func (a *atomicFile) Commit() error {
	a.done = true
	if err := a.File.Sync(); err != nil {
		a.File.Close()
		_ = a.root.Remove(a.tmp)
		return fileError("sync", a.tmp, err)
	}
	if err := a.File.Close(); err != nil {
		_ = a.root.Remove(a.tmp)
		return fileError("close", a.tmp, err)
	}
	if err := a.root.Rename(a.tmp, a.final); err != nil {
		_ = a.root.Remove(a.tmp)
		return fileError("rename", a.final, err)
	}
	return nil
}

// Abort removes the temporary file unless Commit ran; safe to defer.
func (a *atomicFile) Abort() {
	if a.done {
		return
	}
	a.done = true
	a.File.Close()
	_ = a.root.Remove(a.tmp)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// safeName turns a job id into a file-name part ([A-Za-z0-9_.-]); ids may hold ':'.
func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.' {
			return r
		}
		return '_'
	}, s)
}
