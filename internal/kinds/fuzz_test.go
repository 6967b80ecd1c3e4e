package kinds

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzRelPath: any path the submission check accepts stays inside its root, both by
// its shape and when opened through os.Root (the run-time check), symlinks included.
func FuzzRelPath(f *testing.F) {
	for _, seed := range []string{"a.txt", "../etc/passwd", "/etc/passwd", "a/../../b", "a\x00b", `..\..\x`,
		"dir/./file", strings.Repeat("a/", 600), "link/secret", "link", "./..", "a/b/..", ""} {
		f.Add(seed)
	}
	root := f.TempDir()
	outside := f.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("x"), 0o600); err != nil {
		f.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "link")); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "a.txt"), []byte("ok"), 0o600); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if RelPathProblem(p) != "" {
			return
		}
		if strings.ContainsRune(p, 0) || filepath.IsAbs(p) || len(p) > MaxPathLen {
			t.Fatalf("accepted %q", p)
		}
		for _, seg := range strings.Split(strings.ReplaceAll(p, `\`, "/"), "/") {
			if seg == ".." {
				t.Fatalf("accepted a .. segment in %q", p)
			}
		}
		r, err := os.OpenRoot(root)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		file, err := r.Open(p)
		if err != nil {
			return // missing, or refused because a symlink leaves the root
		}
		defer file.Close()
		info, err := file.Stat()
		if err != nil {
			t.Fatal(err)
		}
		// Whatever opened must be inside the root: the secret outside never is.
		if !info.IsDir() && info.Size() == 1 {
			t.Fatalf("%q opened the file outside the root", p)
		}
	})
}
