// Package duroxide is a durable-execution runtime: orchestrations written as
// ordinary Go functions whose progress is recorded as an event history in a
// store, so they survive crashes and restarts and resume exactly where they
// were.
//
// # Model
//
// An orchestration is a deterministic function of its input and history. It
// schedules work through its [OrchestrationContext]: activities
// ([OrchestrationContext.CallActivity], delivered at least once), durable
// timers ([OrchestrationContext.CreateTimer]), external events
// ([OrchestrationContext.WaitForEvent]), sub-orchestrations and detached
// orchestrations. Each call returns a [Task]; [Task.Await] waits for one,
// [OrchestrationContext.Select] races several (the lowest index wins ties;
// the others are cancelled and the decision is recorded), and
// [OrchestrationContext.Join] waits for all. [OrchestrationContext.ContinueAsNew]
// restarts an instance with a fresh history. Time and random ids come from
// [OrchestrationContext.UtcNow] and [OrchestrationContext.NewGUID], which are
// recorded.
//
// Activities are plain functions of a [context.Context] and an input; the
// context is cancelled when the orchestration no longer wants the result.
//
// # Retries
//
// [OrchestrationContext.CallActivityWithRetry] runs an activity under a
// [RetryPolicy]: a number of attempts, a [Backoff] (NoBackoff, Fixed, Linear,
// Exponential), a per-attempt timeout, a total timeout, deterministic jitter
// and a retry predicate. Every attempt and every wait is part of the history.
//
// Histories say what happened: attempt schedules carry their attempt number
// and policy (Event.Attempt, MaxAttempts, Policy, see RetryPolicy.WithName)
// and timers their purpose (Event.Purpose: user, backoff, attempt_timeout,
// total_timeout). Histories written before these fields replay unchanged.
//
// # Changing code safely
//
// Instances in flight replay their history through the code deployed now.
// A change to what an orchestration schedules goes behind
// [OrchestrationContext.GetVersion], which records the version an
// execution took (a VersionMarker event) and gives executions that passed
// the point before the change VersionBeforeChange. Larger rewrites can be
// registered as a new version ([WithVersion]); running instances keep theirs.
// [Executor.Replay] (and duroxide/duroxidetest's Replay and ReplayFile)
// checks recorded histories against today's code before a release.
//
// # Testing
//
// duroxide/duroxidetest runs orchestrations in memory on the real engine,
// with mocked activities and a virtual clock; [Executor] is the engine
// without a store that it builds on.
//
// # Running
//
// A [Runtime] ([Start]) fetches work from a [Store] (duroxide/sqlite,
// duroxide/postgres) and runs turns and activities; a [Client] starts,
// signals, cancels, inspects and deletes instances. When code no longer
// matches its history the instance fails with an error beginning
// "nondeterministic:", never silently and never with a panic.
//
// # Retention
//
// Every execution of a continue-as-new chain keeps its history until it is
// pruned. [Options.KeepExecutions] (or [WithKeepExecutions] per
// orchestration) keeps only the newest n executions: the turn that starts a
// new execution deletes the older ones in the same store transaction
// ([TurnCommit.KeepExecutions]). [Client.PruneExecutions] and
// [Client.DeleteInstancesBulk] remove old executions and finished instances
// on demand.
package duroxide
