package app

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// StoreFile is the name of the SQLite store in the data directory.
const StoreFile = "toygres.db"

// secureDataDir sets the modes of the data directory and of the SQLite
// store before anything opens it: the directory 0711 (the local data
// plane's per-instance accounts must traverse it to reach their instance
// directories, and may not list it), the store and its -wal and -shm files
// 0600. The store file is created empty (a valid new SQLite database) when
// missing, so that SQLite, which gives -wal and -shm the mode of the
// database file, never makes them readable by others. Links are not
// followed.
func secureDataDir(dir string) error {
	if err := os.Chmod(dir, 0o711); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	for _, name := range []string{StoreFile, StoreFile + "-wal", StoreFile + "-shm", "secret.key"} {
		path := filepath.Join(dir, name)
		flags := os.O_RDONLY | syscall.O_NOFOLLOW | syscall.O_NONBLOCK
		if name == StoreFile {
			flags |= os.O_CREATE
		}
		f, err := os.OpenFile(path, flags, 0o600)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
		err = f.Chmod(0o600)
		f.Close()
		if err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
	}
	return nil
}
