import threading, time
from concurrent.futures import ThreadPoolExecutor
from risk_tasks.client import RiskClient
from risk_tasks.engine.model import TradingState
from tests.integration.helpers import wait_until

def test_stress(world, private_broker):
    world.default_policies(); world.symbol("BTC"); world.prices({"BTC": 100}); world.account("A", 10**9)
    env = {"RISK_BROKER_ACK_EMULATION": "0"}
    w = private_broker.start_worker(queues="pretrade", env=env)
    bad = []
    with RiskClient(app=private_broker.app, timeout=1.0) as client:
        for cycle in range(25):
            world.platform_state(TradingState.ACTIVE)
            outcomes = []
            go = threading.Event(); go.set()
            def stream():
                while go.is_set():
                    outcomes.append(client.check_order(world.order()))
            with ThreadPoolExecutor(3) as pool:
                fs = [pool.submit(stream) for _ in range(3)]
                wait_until(lambda: sum(1 for r in list(outcomes) if not r.get("client_side")) >= 10)
                w.kill()
                wait_until(lambda: sum(1 for r in list(outcomes) if r.get("client_side")) >= 3, timeout=30)
                go.clear()
                [f.result(timeout=10) for f in fs]
            world.platform_state(TradingState.HALTED)
            w = private_broker.start_worker(queues="pretrade", env=env)
            wait_until(lambda: private_broker.queue_length("pretrade") == 0)
            s = client.check_order(world.order(), timeout=20)
            if s["rejection_reason"] != "emergency_stop_active":
                bad.append((cycle, s))
            print(cycle, s["rejection_reason"], flush=True)
    assert not bad, bad
