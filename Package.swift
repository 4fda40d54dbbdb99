// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "lifeguard",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Lifeguard", targets: ["Lifeguard"]),
        .library(name: "LifeguardPostgres", targets: ["LifeguardPostgres"]),
        .library(name: "LifeguardHummingbird", targets: ["LifeguardHummingbird"]),
        .library(name: "LifeguardTestUtils", targets: ["LifeguardTestUtils"]),
        .library(name: "LifeguardBench", targets: ["LifeguardBench", "LifeguardLab"]),
        .executable(name: "lifeguard", targets: ["LifeguardCLI"]),
        .executable(name: "rag-service", targets: ["RAGService"]),
    ],
    dependencies: [
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.7.3"),
        .package(url: "https://github.com/apple/swift-configuration.git", from: "1.4.0"),
        // `swift package generate-documentation`: the DocC catalogs in Sources/<library>/<library>.docc.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin.git", from: "1.5.0"),
    ],
    targets: [
        // The pool itself: generic over any connection, no NIO and no Postgres.
        .target(
            name: "Lifeguard",
            dependencies: [
                "CTimestampCounter",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ]
        ),
        // Reads the processor's timestamp counter, for the pool's clock.
        .target(name: "CTimestampCounter"),
        // A manual clock and an in-memory connection factory, shared by tests and benchmarks.
        .target(
            name: "LifeguardTestUtils",
            dependencies: ["Lifeguard"]
        ),
        // The PostgresNIO adapter.
        .target(
            name: "LifeguardPostgres",
            dependencies: [
                "Lifeguard",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),
        // Hummingbird 2: LifeguardError as HTTP, a deadline per request, the pool's routes and
        // live dashboard. Lifeguard and LifeguardPostgres never depend on Hummingbird.
        .target(
            name: "LifeguardHummingbird",
            dependencies: [
                "Lifeguard",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // Scenarios, sizing and the simulator that runs the real state machine on a virtual clock.
        .target(
            name: "LifeguardLab",
            dependencies: [
                "Lifeguard",
                .product(name: "HeapModule", package: "swift-collections"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),
        // The drivers of `lifeguard bench` and of the benchmark programs against a server.
        .target(
            name: "LifeguardBench",
            dependencies: [
                "Lifeguard",
                "LifeguardLab",
                "LifeguardPostgres",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // `lifeguard doctor`: the server's view of a pool's failures, for any stack.
        .target(
            name: "LifeguardDoctor",
            dependencies: [
                "Lifeguard",
                "LifeguardPostgres",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The `lifeguard` command-line tool.
        .executableTarget(
            name: "LifeguardCLI",
            dependencies: [
                "Lifeguard",
                "LifeguardBench",
                "LifeguardDoctor",
                "LifeguardLab",
                "LifeguardPostgres",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]
        ),
        // Examples/rag-service: a Hummingbird 2 app on Lifeguard (or PostgresClient), built
        // with the package so that CI builds it once.
        .executableTarget(
            name: "RAGService",
            dependencies: [
                "Lifeguard",
                "LifeguardHummingbird",
                "LifeguardPostgres",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Examples/rag-service/Sources"
        ),
        .testTarget(
            name: "LifeguardTests",
            dependencies: [
                "Lifeguard",
                "LifeguardTestUtils",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "PropertyBased", package: "swift-property-based"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
            ]
        ),
        .testTarget(
            name: "LifeguardPostgresTests",
            dependencies: [
                "Lifeguard",
                "LifeguardDoctor",
                "LifeguardPostgres",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "InMemoryLogging", package: "swift-log"),
                .product(name: "PropertyBased", package: "swift-property-based"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
                .product(name: "Configuration", package: "swift-configuration"),
            ]
        ),
        .testTarget(
            name: "LifeguardHummingbirdTests",
            dependencies: [
                "Lifeguard",
                "LifeguardHummingbird",
                "LifeguardPostgres",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                "LifeguardTestUtils",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .testTarget(name: "LifeguardCLITests", dependencies: ["LifeguardCLI", "LifeguardBench", "LifeguardPostgres", .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "LifeguardLabTests", dependencies: ["LifeguardLab", "Lifeguard"]),

    ],
    swiftLanguageModes: [.v6]
)
