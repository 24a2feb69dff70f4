//! The baseline book and the engine, driven by the same stream, rest the
//! same orders and make the same trades command by command: the benchmark
//! compares equal work.

use otedama_benches::baseline_book::BaselineBook;
use otedama_engine::workload::{Mix, Workload, limits};
use otedama_engine::{Event, Exchange};

#[test]
fn baseline_matches_the_engine_command_by_command() {
    for mix in [Mix::ExchangeCore, Mix::Sweep] {
        let mut ex = Exchange::new(limits());
        let mut w = Workload::new(mix, 7);
        let mut out = Vec::new();
        for c in w.setup() {
            ex.apply(&c, &mut out);
        }
        let mut b = BaselineBook::new(limits().orders_max);
        let mut trades = 0u64;
        for i in 0..200_000 {
            let c = w.next_command();
            out.clear();
            ex.apply(&c, &mut out);
            w.observe(&out);
            b.apply(&c);
            trades += out.iter().filter(|e| matches!(e, Event::Executed { maker: true, .. })).count() as u64;
            assert_eq!(b.resting(), ex.open_orders(), "{mix:?} command {i}: {c:?}\n{out:?}");
            assert_eq!(b.trades, trades, "{mix:?} command {i}: {c:?}\n{out:?}");
        }
    }
}
