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
// An activity can be registered with a default policy ([WithDefaultRetry],
// or [Options.RetryPolicies]): plain [OrchestrationContext.CallActivity]
// calls of it retry under the policy, which is recorded when the sequence
// starts (Event.RetryPolicy) and followed on replay, so changing the
// default never changes a sequence in flight. An explicit policy wins;
// [NoRetry] makes one attempt.
//
// A circuit breaker ([WithCircuitBreaker], [CircuitBreakerConfig]) makes
// attempts of an activity, or of one key of it, fail fast with
// [ErrCircuitOpen] while its callee keeps failing; the refusals are
// ordinary failed attempts, decided in the activity worker.
// [Runtime.RetryStats] and [Suggest] turn observed retries into advice on
// the policies.
//
// Histories say what happened: attempt schedules carry their attempt number
// and policy (Event.Attempt, MaxAttempts, Policy, see RetryPolicy.WithName)
// and timers their purpose (Event.Purpose: user, backoff, attempt_timeout,
// total_timeout). Histories written before these fields replay unchanged.
//
// Short retries are not written step by step: when an attempt fails and
// its turn only waits (a backoff, or a sleep of the orchestration), the
// runtime keeps the turn in memory, fires the timer itself, runs the next
// attempt in memory too when that is all the next turn does, and commits
// the whole chain (failures, waits, attempts and the outcome, the same
// events as otherwise) in one transaction, as long as the chain stays
// within a second. If the process dies before that commit, the failures
// were never recorded and the first failed attempt runs again, as with
// retries kept in memory elsewhere; a success is always committed before
// the orchestration goes on, and longer waits are durable timers.
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
//
// # Tracing
//
// With [Options.TracerProvider] set the runtime emits OpenTelemetry spans
// (it depends on the OpenTelemetry API only; the application picks the SDK
// and exporter). A span cannot be held open across processes, so the model
// is:
//
//   - [Client.StartOrchestration] records the W3C traceparent of the span in
//     its ctx on the start message ([WorkItem.TraceContext]).
//   - The turn that starts an execution opens "orchestration <name>", a
//     child of that span, and records the orchestration span's traceparent
//     on OrchestrationStarted ([Event.TraceContext]). The span stays open
//     while the execution's engine is cached in this process and ends with
//     the execution (attribute duroxide.status); if the engine goes first
//     (eviction, shutdown, a lost lock, CacheSize < 0) it ends then, with
//     duroxide.orchestration.open=true.
//   - Every committed turn, in any process and after any restart, is a
//     span "turn <name>" whose parent is the orchestration span read from
//     history; its events list what the turn recorded: "activity
//     scheduled" (with the retry attempt), "activity failed", "backoff"
//     (a retry wait: attempt, delay_ms, fire_at_ms), "timer created",
//     "timer fired".
//   - Every activity attempt is a span "activity <name>" under the
//     orchestration span, with duroxide.attempt, duroxide.max_attempts,
//     duroxide.delivery_attempt, duroxide.outcome (success, failure,
//     timeout, cancelled, circuit_open) and the error; the activity
//     function's ctx carries it, so its logs and outgoing calls join the
//     trace.
//   - Sub-orchestrations and detached starts continue the trace under the
//     parent's orchestration span; continue-as-new starts a new trace linked
//     to the previous execution's span.
//   - Histories without a trace context get a deterministic stand-in parent
//     derived from instance and execution id, so their turns and attempts
//     still share one trace.
//
// Without a TracerProvider no span is created: the hooks are nil checks,
// and the starter's traceparent is still recorded, so a traced process
// that runs later turns continues the starter's trace.
package duroxide
