import Lifeguard

extension PostgresPool.Configuration {
    /// A server's address: a host name or IP address, and a port.
    public struct Host: Sendable, Hashable, CustomStringConvertible {
        /// The host name or IP address (an IPv6 address without brackets).
        public var name: String
        /// The port.
        public var port: Int

        /// Creates a host.
        ///
        /// - Parameters:
        ///   - name: The host name or IP address.
        ///   - port: The port. Default: 5432.
        public init(_ name: String, port: Int = 5432) {
            self.name = name
            self.port = port
        }

        /// `name:port`, an IPv6 address in brackets (`[::1]:5432`).
        public var description: String {
            self.name.contains(":") ? "[\(self.name)]:\(self.port)" : "\(self.name):\(self.port)"
        }
    }

    /// Which servers a connection may go to: libpq's `target_session_attrs`, read from the
    /// server at connect (`in_hot_standby` and `default_transaction_read_only`, which
    /// PostgreSQL 14 and later report in the startup; older servers are asked).
    public enum TargetSessionAttributes: String, Sendable, Hashable, CaseIterable {
        /// Any server.
        case any
        /// A server that accepts writes: a primary whose `default_transaction_read_only` is off.
        case readWrite = "read-write"
        /// A server that does not accept writes by default: a standby, or a primary whose
        /// `default_transaction_read_only` is on.
        case readOnly = "read-only"
        /// A primary (not in hot standby).
        case primary
        /// A standby (in hot standby).
        case standby
        /// A standby when one answers, else any server.
        case preferStandby = "prefer-standby"
    }

    /// The order hosts are tried in: libpq's `load_balance_hosts`.
    public enum LoadBalanceHosts: String, Sendable, Hashable, CaseIterable {
        /// In the order listed.
        case disable
        /// In a random order for each connection, so that connections spread over the hosts.
        case random
    }

    /// Every host, in the order listed: ``host`` and ``port`` first, then ``otherHosts``.
    /// Empty for a Unix socket. Setting it sets all three.
    public var hosts: [Host] {
        get { (self.host.map { [Host($0, port: self.port)] } ?? []) + self.otherHosts }
        set {
            self.host = newValue.first?.name
            if let first = newValue.first { self.port = first.port }
            self.otherHosts = Array(newValue.dropFirst())
        }
    }

    /// The most hosts a configuration may list.
    static let mostHosts = 64

    /// The URL options ``init(url:)`` knows.
    static let urlOptions = ["sslmode", "sslrootcert", "application_name", "connect_timeout", "host", "target_session_attrs", "load_balance_hosts"]

    /// The host options for ``description``, those that differ from the defaults.
    var hostOptionsDescription: String {
        (self.targetSessionAttributes == .any ? "" : "&target_session_attrs=\(self.targetSessionAttributes.rawValue)")
            + (self.loadBalanceHosts == .disable ? "" : "&load_balance_hosts=\(self.loadBalanceHosts.rawValue)")
    }

    /// The problems of ``otherHosts`` and of the host settings.
    func hostListProblems() -> [String] {
        var problems: [String] = []
        if self.hosts.count > Self.mostHosts {
            problems.append("\(self.hosts.count) hosts are listed; at most \(Self.mostHosts)")
        }
        for (index, host) in self.otherHosts.enumerated() {
            let place = "host \(index + 2)"
            if host.name.isEmpty {
                problems.append("\(place) has an empty name; give a host name or address")
            }
            if !(1...65_535).contains(host.port) {
                problems.append("\(place)'s port is \(host.port); it must be from 1 to 65535")
            }
            if host.name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
                problems.append("\(place)'s name contains a control character")
            }
        }
        // The budget is per host: a host listed twice would get it twice.
        var seen: Set<String> = []
        for host in self.hosts where !host.name.isEmpty && !seen.insert("\(host.name.lowercased()):\(host.port)").inserted {
            problems.append("host \(host.description) is listed twice; list each host once (the budget is per host)")
        }
        if !self.otherHosts.isEmpty && self.unixSocketDirectory != nil {
            problems.append("unixSocketDirectory is set with several hosts; list TCP hosts, or one Unix socket folder")
        }
        if self.hostRecheckInterval < .milliseconds(100) || self.hostRecheckInterval > .seconds(3_600) {
            problems.append("hostRecheckInterval is \(self.hostRecheckInterval); it must be from 100 ms to one hour")
        }
        return problems
    }

    /// A URL's list of hosts (`h1:5432,h2,[::1]:5433`), when its authority lists more than one:
    /// the hosts, their problems, and the URL with one placeholder host in their place for
    /// `URLComponents` to read the rest. `nil` for a URL with at most one host.
    static func splitHostList(_ url: String) -> (hosts: [Host], problems: [String], url: String)? {
        guard let scheme = url.range(of: "://") else { return nil }
        let rest = url[scheme.upperBound...]
        let authorityEnd = rest.firstIndex(where: { "/?#".contains($0) }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        let listStart = authority.lastIndex(of: "@").map(authority.index(after:)) ?? authority.startIndex
        let list = authority[listStart...]
        guard list.contains(",") else { return nil }
        var hosts: [Host] = []
        var problems: [String] = []
        for item in list.split(separator: ",", omittingEmptySubsequences: false) {
            switch Self.parseHost(item) {
            case .success(let host): hosts.append(host)
            case .failure(let problem): problems.append(problem.description)
            }
        }
        return (hosts, problems, String(url[..<listStart]) + "placeholder" + String(url[authorityEnd...]))
    }

    /// A problem of one host of a URL's list.
    struct HostProblem: Error, CustomStringConvertible {
        let description: String
    }

    /// One item of a URL's list of hosts: `name`, `name:port`, `[v6]` or `[v6]:port`.
    private static func parseHost(_ item: Substring) -> Result<Host, HostProblem> {
        guard !item.isEmpty else {
            return .failure(HostProblem(description: "the database URL lists an empty host (two commas, or one at an end); remove it"))
        }
        let name: Substring
        let port: Substring?
        if item.hasPrefix("[") {
            guard let close = item.firstIndex(of: "]") else {
                return .failure(HostProblem(description: "the database URL's host '\(Self.quotedHost(item))' opens a '[' it does not close"))
            }
            name = item[item.index(after: item.startIndex)..<close]
            let after = item[item.index(after: close)...]
            guard after.isEmpty || after.hasPrefix(":") else {
                return .failure(HostProblem(description: "the database URL's host '\(Self.quotedHost(item))' has text after its ']'"))
            }
            port = after.isEmpty ? nil : after.dropFirst()
        } else if let colon = item.lastIndex(of: ":") {
            name = item[..<colon]
            port = item[item.index(after: colon)...]
        } else {
            name = item
            port = nil
        }
        guard !name.isEmpty else {
            return .failure(HostProblem(description: "the database URL lists an empty host before a port; give its name"))
        }
        guard let decoded = String(name).removingPercentEncoding else {
            return .failure(HostProblem(description: "the database URL's host '\(Self.quotedHost(item))' has an invalid percent escape"))
        }
        guard let port else { return .success(Host(decoded)) }
        guard let number = Int(port), (1...65_535).contains(number) else {
            return .failure(HostProblem(description: "the database URL's port '\(Self.quoted(String(port)))' is not a port (1 to 65535)"))
        }
        return .success(Host(decoded, port: number))
    }

    /// A host from the input as a problem may show it: as written when it has only the
    /// characters of host names and addresses (at most 60), else not at all.
    private static func quotedHost(_ value: Substring) -> String {
        let allowed = value.utf8.count <= 60 && value.utf8.allSatisfy { byte in
            (0x30...0x39).contains(byte) || (0x61...0x7A).contains(byte | 0x20) || "_-.:[]%".utf8.contains(byte)
        }
        return allowed ? String(value) : "(a value that is not a host name)"
    }
}
