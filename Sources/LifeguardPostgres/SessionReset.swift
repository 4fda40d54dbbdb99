extension PostgresPool {
    /// How the pool makes sure that a lease inherits nothing of the session of the lease
    /// before it: settings (`SET`), temporary tables, session advisory locks, `LISTEN`,
    /// statements prepared with SQL `PREPARE`, open cursors.
    ///
    /// An open transaction is always rolled back, whatever the choice.
    public enum SessionReset: Sendable, Hashable {
        /// The pool reads each statement's text, and closes the connection when the lease
        /// ends if a statement changes the session (`SET`, `CREATE TEMP`, `LISTEN`, `DO`,
        /// `CALL`, `set_config`, session advisory locks, …). It costs nothing per statement,
        /// but text is no proof: a function or trigger that changes the session inside is not
        /// seen, and the next lease inherits what it did.
        case whenStatementsChangeIt
        /// Every lease that ran a statement is followed by a reset on the server, as
        /// `DISCARD ALL` does but keeping the statements PostgresNIO prepared: the session
        /// authorization and role, every setting, session advisory locks, `LISTEN`, cursors,
        /// SQL-prepared statements, temporary tables, and what `currval` and `lastval` remember
        /// of sequences. Sound whatever the statements did;
        /// it costs one round trip per lease (see BENCHMARKS.md). Statements whose text
        /// changes the session still close their connection.
        case afterEveryLease
    }
}

extension PostgresPool.SessionReset {
    /// The reset of ``afterEveryLease``: one statement, so one round trip. Cursors, `LISTEN`
    /// channels and prepared statements are closed through `EXECUTE`, as PL/pgSQL has its own
    /// `CLOSE`. `DEALLOCATE ALL` would drop PostgresNIO's prepared statements too, so only those
    /// prepared with SQL go.
    static let statement = """
        DO $lifeguard_reset$
        DECLARE prepared record;
        BEGIN
            SET SESSION AUTHORIZATION DEFAULT;
            RESET ROLE;
            RESET ALL;
            PERFORM pg_advisory_unlock_all();
            EXECUTE 'UNLISTEN *';
            EXECUTE 'CLOSE ALL';
            FOR prepared IN SELECT name FROM pg_prepared_statements WHERE from_sql LOOP
                EXECUTE format('DEALLOCATE %I', prepared.name);
            END LOOP;
            EXECUTE 'DISCARD TEMP';
            EXECUTE 'DISCARD SEQUENCES';
        END
        $lifeguard_reset$
        """
}
