"""The ops console in a real browser (headless Debian Chromium through Selenium), against a running stack.

Ops sign in by pasting a token, see the pushes awaiting review across stores with the time left in each
window, approve one and reject another with a reason; the backend's state is then read over gRPC. The
store lookup shows a store's capacity, group-sets and quota ledger, and why an account cannot create.
Screenshots go to ``results/test-output/console/``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import WebDriverWait

from gateway.auth import Principal, Role, mint_token
from qun.gateway.v1 import push_pb2 as p
from tests.flows.test_push import Account
from tests.support import facts
from tests.support.stack import GatewayClient, RunningStack, running_stack, unique

SCREENSHOTS = Path(__file__).resolve().parents[2] / "results" / "test-output" / "console"
OPS = Principal("ops-console", Role.OPS)
WAIT_SECONDS = 15


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with running_stack(tmp_path_factory.mktemp("stack-console"), "sqlite") as running:
        # The console counts the review window down against the browser's clock: the stack's is now.
        running.set_time(datetime.now(UTC).replace(microsecond=0))
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail("chromium and chromedriver are missing: `make browser-tools` installs them (make test does)")
    options = Options()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,1000")
    session = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        yield session
    finally:
        session.quit()


def shot(browser: WebDriver, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def wait_for(browser: WebDriver, condition: object) -> WebElement:
    found: WebElement = WebDriverWait(browser, WAIT_SECONDS).until(condition)  # type: ignore[arg-type]
    return found


def sign_in(browser: WebDriver, platform: RunningStack, principal: Principal) -> None:
    browser.get(f"{platform.stack.gateway.http_url}/console/")
    box = wait_for(browser, seen.visibility_of_element_located((By.ID, "token")))
    box.clear()
    box.send_keys(mint_token(platform.stack.secrets["QUN_TOKEN_SECRET"], principal))
    browser.find_element(By.ID, "sign-in-button").click()


def queue_row(browser: WebDriver, push_id: str) -> WebElement:
    return wait_for(browser, seen.element_to_be_clickable((By.CSS_SELECTOR, f'tr[data-push-id="{push_id}"]')))


def review(browser: WebDriver, push_id: str, button: str, note: str = "") -> str:
    queue_row(browser, push_id).click()
    wait_for(browser, seen.text_to_be_present_in_element((By.ID, "review-push-id"), push_id))
    browser.find_element(By.ID, "review-note").send_keys(note)
    browser.find_element(By.ID, button).click()
    wait_for(browser, seen.text_to_be_present_in_element((By.ID, "review-result"), push_id))
    return browser.find_element(By.ID, "review-result").text


async def pending_push(gw: GatewayClient, platform: RunningStack, title: str, body: str) -> tuple[Account, p.Push]:
    account = await Account(gw, platform).open()
    await account.subscribers(10)
    return account, await account.submit(p.PUSH_KIND_SUBSCRIPTION, title=title, body=body)


async def test_ops_approve_one_push_and_reject_another_in_the_browser(
    browser: WebDriver, platform: RunningStack
) -> None:
    gw = platform.client()
    try:
        first, approved = await pending_push(gw, platform, "春季新品", "新品上架,会员 9 折")
        # A merchant's text is shown as text: markup in it never runs in the ops console.
        hostile = "<img src=x onerror=\"document.title='owned'\">清仓"
        second, rejected = await pending_push(gw, platform, hostile, "<script>document.title='owned'</script>")

        sign_in(browser, platform, Principal("c-not-ops", Role.CONSUMER))
        error = wait_for(browser, seen.visibility_of_element_located((By.ID, "sign-in-error")))
        assert "permission_denied" in error.text and not browser.find_element(By.ID, "console").is_displayed()

        sign_in(browser, platform, OPS)
        row = queue_row(browser, approved.push_id)
        cells = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        assert cells[1:5] == [first.store_id, "subscription", "春季新品", "10"]
        assert cells[5].startswith(("23 h", "24 h")), cells  # the 24-hour window, just begun
        assert queue_row(browser, rejected.push_id).find_elements(By.TAG_NAME, "td")[3].text == hostile
        shot(browser, "1-review-queue")

        assert review(browser, approved.push_id, "approve") == f"{approved.push_id}: approved"
        shot(browser, "2-approved")
        queue_row(browser, rejected.push_id).click()
        browser.find_element(By.ID, "reject").click()  # no reason yet: refused here, nothing sent
        assert "needs a reason" in browser.find_element(By.ID, "review-error").text
        assert browser.find_element(By.ID, "review-body").text == "<script>document.title='owned'</script>"
        result = review(browser, rejected.push_id, "reject", note="含有违规营销用语")
        assert result == f"{rejected.push_id}: rejected"
        shot(browser, "3-rejected")
        assert browser.title == "qun ops console"  # no markup of the merchant's ran
        assert not browser.find_elements(By.CSS_SELECTOR, f'tr[data-push-id="{approved.push_id}"]')

        # The backend holds both decisions, by this ops account, with the reason.
        assert (await first.get(approved.push_id)).state == p.PUSH_STATE_APPROVED
        refused = await second.get(rejected.push_id)
        assert (refused.state, refused.review_note, refused.reviewed_by) == (
            p.PUSH_STATE_REJECTED,
            "含有违规营销用语",
            OPS.subject,
        )

        # Store lookup: capacity, group-sets, the quota ledger (X3), and why an account cannot create (X1).
        consumer = unique("c")
        await gw.report(facts.consumer(consumer))
        browser.find_element(By.ID, "tab-store").click()
        browser.find_element(By.ID, "store-id").send_keys(first.store_id)
        browser.find_element(By.ID, "store-look").click()
        wait_for(browser, seen.visibility_of_element_located((By.ID, "store-result")))
        ledger = browser.find_element(By.ID, "store-ledger").text
        assert "subscription" in ledger and "recall_tier_1" in ledger
        browser.find_element(By.ID, "explain-account").send_keys(consumer)
        browser.find_element(By.ID, "explain-create").click()
        wait_for(browser, seen.text_to_be_present_in_element((By.ID, "explain-result"), "refused"))
        assert "E1" in browser.find_element(By.ID, "explain-result").text
        shot(browser, "4-store-lookup")
    finally:
        await gw.close()
