package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/toygres/toygres/duroxide"
)

// Error is the error type of every failed Store call. It names the
// operation, wraps the cause (a duroxide sentinel such as
// duroxide.ErrLockLost where one applies, else the driver's error) and
// reports whether retrying may succeed (duroxide.IsRetryable).
type Error struct {
	Op  string // Store method, e.g. "FetchOrchestrationItem"
	Err error
	// Transient is true for connection failures, deadlocks (40P01),
	// serialization failures (40001), invalidated cached plans (0A000),
	// server shutdown and resource exhaustion.
	Transient bool
}

func (e *Error) Error() string { return "duroxide/postgres: " + e.Op + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Retryable implements duroxide.Retryable.
func (e *Error) Retryable() bool { return e.Transient }

// SQLSTATEs raised by the store's functions.
const (
	codeLockLost = "DXLCK"
	codeNotFound = "DXNFD"
	codeSubOrch  = "DXSUB"
	codeRunning  = "DXRUN"
	codeConflict = "DXCNF"
)

// wrap turns a driver error into an *Error for operation op, mapping the
// store's own SQLSTATEs to duroxide sentinels. nil stays nil.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case codeLockLost:
			return &Error{Op: op, Err: fmt.Errorf("%w: %s", duroxide.ErrLockLost, pgErr.Message)}
		case codeNotFound:
			return &Error{Op: op, Err: fmt.Errorf("%w: %s", duroxide.ErrNotFound, pgErr.Message)}
		case codeSubOrch:
			return &Error{Op: op, Err: fmt.Errorf("%w: %s", duroxide.ErrIsSubOrchestration, pgErr.Message)}
		case codeRunning:
			return &Error{Op: op, Err: fmt.Errorf("%w: %s", duroxide.ErrInstanceRunning, pgErr.Message)}
		case codeConflict:
			return &Error{Op: op, Err: fmt.Errorf("%w: %s", duroxide.ErrTurnConflict, pgErr.Message)}
		case "23505":
			if pgErr.ConstraintName == "history_pkey" {
				return &Error{Op: op, Err: fmt.Errorf("%w: %s", duroxide.ErrDuplicateEvent, pgErr.Detail)}
			}
		}
	}
	return &Error{Op: op, Err: err, Transient: isTransient(err)}
}

// isTransient classifies a driver error.
func isTransient(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// The caller gave up; retrying is the caller's decision. A
		// statement_timeout on the server arrives as a PgError (57014).
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		code := pgErr.Code
		switch {
		case code == "40P01", // deadlock_detected
			code == "40001",               // serialization_failure
			code == "0A000",               // feature_not_supported: cached plan must not change result type
			code == "55P03",               // lock_not_available
			code == "57014",               // query_canceled (statement timeout)
			code == "53300",               // too_many_connections
			code == "53400",               // configuration_limit_exceeded
			code == "57P01",               // admin_shutdown
			code == "57P02",               // crash_shutdown
			code == "57P03",               // cannot_connect_now
			strings.HasPrefix(code, "08"): // connection_exception class
			return true
		}
		return false
	}
	if pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return true
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "conn closed") || strings.Contains(msg, "conn busy") ||
		strings.Contains(msg, "failed to connect") || strings.Contains(msg, "unexpected EOF")
}

// retryAttempts bounds how often a call is repeated after errors that
// guarantee nothing was applied.
const retryAttempts = 3

// safeToRepeat reports whether err proves that the statement had no effect:
// the server rolled it back (deadlock, serialization failure, invalidated
// cached plan, lock not available, session terminated by a shutdown) or it
// was never sent. Connection failures
// in the middle of a call are not repeated, since a commit may have
// happened; they are returned as retryable errors instead.
func safeToRepeat(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "40P01", "40001", "0A000", "55P03",
			// The server terminated the session before the statement
			// completed (a stale pooled connection after a restart):
			// the transaction was rolled back.
			"57P01", "57P02", "57P03":
			return true
		}
		return false
	}
	return pgconn.SafeToRetry(err)
}
