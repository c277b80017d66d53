package io.streamfolio.flink;

import java.io.BufferedWriter;
import java.io.FileOutputStream;
import java.io.OutputStreamWriter;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.MapState;
import org.apache.flink.api.common.state.MapStateDescriptor;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.runtime.checkpoint.metadata.CheckpointMetadata;
import org.apache.flink.runtime.state.IncrementalKeyedStateHandle;
import org.apache.flink.runtime.state.StateBackend;
import org.apache.flink.runtime.state.hashmap.HashMapStateBackend;
import org.apache.flink.state.api.OperatorIdentifier;
import org.apache.flink.state.api.SavepointReader;
import org.apache.flink.state.api.functions.KeyedStateReaderFunction;
import org.apache.flink.state.api.runtime.SavepointLoader;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.types.Row;
import org.apache.flink.util.CloseableIterator;
import org.apache.flink.util.Collector;

/**
 * The keyed state of the job's portfolio step (operator uid {@code portfolio-shards}) in a
 * retained checkpoint or a savepoint, as JSON lines: for each key (a shard) and each entry of its
 * states one {@code {"shard": ..., "state": "roster"|"bars"|"panels"|"epoch", "key": map key or
 * null, "value": text}}. The values are streamfolio's versioned state text, decoded in Python
 * ({@code streamfolio.flink.state}).
 *
 * <p>Usage: {@code StateReader CHECKPOINT_DIR OUTPUT_FILE [UID]} ({@code -} as the output file:
 * standard output). Reads state declared with Flink {@code STRING} values, keyed by PyFlink's
 * one-field row of a {@code STRING}; state written with other serializers fails with Flink's own
 * message (a {@code StateMigrationException}).
 */
public final class StateReader {
  /** The uid of PortfolioShards in streamfolio.flink.job. */
  public static final String UID = "portfolio-shards";

  private StateReader() {}

  public static void main(String[] args) throws Exception {
    if (args.length < 2 || args.length > 3) {
      System.err.println("usage: StateReader CHECKPOINT_DIR OUTPUT_FILE|- [UID]");
      System.exit(2);
    }
    String path = args[0];
    String uid = args.length == 3 ? args[2] : UID;
    StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
    env.setParallelism(1);
    StateBackend backend = backendFor(path);
    SavepointReader savepoint = SavepointReader.read(env, path, backend);
    Writer out =
        new BufferedWriter(
            new OutputStreamWriter(
                "-".equals(args[1]) ? System.out : new FileOutputStream(args[1]),
                StandardCharsets.UTF_8));
    long lines = 0;
    try (CloseableIterator<String> entries =
        savepoint
            .readKeyedState(
                OperatorIdentifier.forUid(uid),
                new ShardStates(),
                Types.ROW(Types.STRING),
                Types.STRING)
            .executeAndCollect("streamfolio state reader")) {
      while (entries.hasNext()) {
        out.write(entries.next());
        out.write('\n');
        lines++;
      }
    }
    out.flush();
    if (!"-".equals(args[1])) {
      out.close();
    }
    System.err.println(
        "state reader: "
            + lines
            + " entries of operator "
            + uid
            + " ("
            + backend.getClass().getSimpleName()
            + ")");
  }

  /**
   * The state backend that reads the checkpoint at {@code path}: RocksDB's for an incremental
   * RocksDB checkpoint (its files are RocksDB's own), else the heap's, which reads the hashmap
   * backend's checkpoints and every savepoint (their format is the same for every backend).
   */
  static StateBackend backendFor(String path) throws Exception {
    CheckpointMetadata metadata = SavepointLoader.loadSavepointMetadata(path);
    boolean incremental =
        metadata.getOperatorStates().stream()
            .flatMap(operator -> operator.getStates().stream())
            .flatMap(subtask -> subtask.getManagedKeyedState().stream())
            .anyMatch(handle -> handle instanceof IncrementalKeyedStateHandle);
    if (!incremental) {
      return new HashMapStateBackend();
    }
    // In flink-dist; named by reflection so the build needs no RocksDB artifacts.
    return (StateBackend)
        Class.forName("org.apache.flink.state.rocksdb.EmbeddedRocksDBStateBackend")
            .getConstructor(boolean.class)
            .newInstance(true);
  }

  /**
   * Every entry of one shard's states, as JSON lines. PyFlink keys a keyed stream by a one-field
   * row of the key's type ({@code Types.ROW([key_type])} in {@code DataStream.key_by}): the shard
   * is that row's field.
   */
  public static final class ShardStates extends KeyedStateReaderFunction<Row, String> {
    private static final long serialVersionUID = 1L;

    private transient MapState<String, String> roster;
    private transient MapState<String, String> bars;
    private transient ValueState<String> panels;
    private transient ValueState<String> epoch;

    @Override
    public void open(OpenContext context) {
      roster = getRuntimeContext().getMapState(mapping("roster"));
      bars = getRuntimeContext().getMapState(mapping("bars"));
      panels = getRuntimeContext().getState(new ValueStateDescriptor<>("panels", Types.STRING));
      epoch = getRuntimeContext().getState(new ValueStateDescriptor<>("epoch", Types.STRING));
    }

    private static MapStateDescriptor<String, String> mapping(String name) {
      return new MapStateDescriptor<>(name, Types.STRING, Types.STRING);
    }

    @Override
    public void readKey(Row key, Context context, Collector<String> out) throws Exception {
      String shard = String.valueOf(key.getField(0));
      for (Map.Entry<String, String> entry : roster.entries()) {
        out.collect(line(shard, "roster", entry.getKey(), entry.getValue()));
      }
      for (Map.Entry<String, String> entry : bars.entries()) {
        out.collect(line(shard, "bars", entry.getKey(), entry.getValue()));
      }
      if (panels.value() != null) {
        out.collect(line(shard, "panels", null, panels.value()));
      }
      if (epoch.value() != null) {
        out.collect(line(shard, "epoch", null, epoch.value()));
      }
    }
  }

  static String line(String shard, String state, String key, String value) {
    StringBuilder json = new StringBuilder(64 + (value == null ? 0 : value.length()));
    json.append("{\"shard\":");
    quote(json, shard);
    json.append(",\"state\":");
    quote(json, state);
    json.append(",\"key\":");
    quote(json, key);
    json.append(",\"value\":");
    quote(json, value);
    return json.append('}').toString();
  }

  /** {@code text} as a JSON string ({@code null} for null). */
  static void quote(StringBuilder json, String text) {
    if (text == null) {
      json.append("null");
      return;
    }
    json.append('"');
    for (int i = 0; i < text.length(); i++) {
      char c = text.charAt(i);
      switch (c) {
        case '"' -> json.append("\\\"");
        case '\\' -> json.append("\\\\");
        case '\n' -> json.append("\\n");
        case '\r' -> json.append("\\r");
        case '\t' -> json.append("\\t");
        default -> {
          if (c < 0x20) {
            json.append(String.format("\\u%04x", (int) c));
          } else {
            json.append(c);
          }
        }
      }
    }
    json.append('"');
  }
}
