// swift-tools-version: 6.1
// Benchmarks: programs that print figures, in a package of their own so that the project's
// tests do not build them. Run from the repository's root:
//   swift run -c release --package-path Benchmarks lease-benchmark
import PackageDescription

let package = Package(
    name: "lifeguard-benchmarks",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "lease-benchmark", targets: ["LeaseBenchmark"]),
        .executable(name: "overload-benchmark", targets: ["OverloadBenchmark"]),
        .executable(name: "agent-storm-benchmark", targets: ["AgentStormBenchmark"]),
        .executable(name: "select-benchmark", targets: ["SelectBenchmark"]),
    ],
    dependencies: [
        .package(name: "lifeguard", path: ".."),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    ],
    targets: [
        // The lease path on package-benchmark, thresholds in Thresholds/ (swift package benchmark).
        .executableTarget(
            name: "LeasePath",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "Lifeguard", package: "lifeguard"),
                .product(name: "LifeguardTestUtils", package: "lifeguard"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            path: "Benchmarks/LeasePath",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // Allocation counting and callgrind toggles, in C.
        .target(name: "BenchmarkProbes"),
        // What the programs against a server share: --database-url, and how figures print.
        .target(name: "BenchSupport", dependencies: [.product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .executableTarget(
            name: "LeaseBenchmark",
            dependencies: [
                "BenchmarkProbes",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Lifeguard", package: "lifeguard"),
                .product(name: "LifeguardTestUtils", package: "lifeguard"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "_ConnectionPoolModule", package: "postgres-nio"),
                .product(name: "_ConnectionPoolTestUtils", package: "postgres-nio"),
            ]
        ),
        .executableTarget(
            name: "OverloadBenchmark",
            dependencies: [
                "BenchSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Lifeguard", package: "lifeguard"),
                .product(name: "LifeguardBench", package: "lifeguard"),
                .product(name: "LifeguardPostgres", package: "lifeguard"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]
        ),
        .executableTarget(
            name: "AgentStormBenchmark",
            dependencies: [
                "BenchSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Lifeguard", package: "lifeguard"),
                .product(name: "LifeguardPostgres", package: "lifeguard"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),
        .executableTarget(
            name: "SelectBenchmark",
            dependencies: [
                "BenchSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                "BenchmarkProbes",
                .product(name: "Lifeguard", package: "lifeguard"),
                .product(name: "LifeguardPostgres", package: "lifeguard"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
