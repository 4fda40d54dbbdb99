import NIOCore

/// Runs a task's jobs on a NIO event loop.
///
/// With ``PostgresPool/Configuration/runsLeasesOnEventLoop``, a lease's body runs on its
/// connection's event loop: a statement is written, and its reply resumes the body, on the
/// thread that owns the socket, instead of hopping between Swift's cooperative threads and
/// NIO's for every reply.
@usableFromInline
final class EventLoopTaskExecutor: TaskExecutor {
    let eventLoop: any EventLoop

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    @usableFromInline func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        self.eventLoop.execute {
            job.runSynchronously(on: self.asUnownedTaskExecutor())
        }
    }
}
