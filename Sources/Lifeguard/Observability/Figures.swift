/// How Lifeguard's reports write numbers: whole from 100, one decimal from 10, two below; a
/// value too large for that (or not finite) as Swift prints it, so that no figure can trap.
///
/// The statistics report, the sizing advice, incidents and the CLI's tables use it; so can a
/// program that prints figures beside them.
public enum Figures {
    /// `value` for a report: 123, 45.6, 7.89.
    ///
    /// - Parameter value: Any number, finite or not.
    /// - Returns: The number as a report writes it.
    public static func format(_ value: Double) -> String {
        if !value.isFinite || abs(value) >= 1e15 { return "\(value)" }
        if value >= 100 { return "\(Int(value.rounded()))" }
        if value >= 10 { return "\((value * 10).rounded() / 10)" }
        return "\((value * 100).rounded() / 100)"
    }
}
