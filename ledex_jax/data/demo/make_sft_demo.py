"""Writes sft_demo.jsonl: small Python problems, each with a plausible wrong solution, the execution
feedback it really gets (from the `executors` pool, as collected data will), an explanation of the
bug and a fix, as codegen / refine / explain_refine SFT records; and sft_demo_problems.jsonl: each
problem's tests (for test-based rewards and checks), keyed by the records' "source".
tests/data/test_sft_demo.py runs every wrong and fixed solution again.

    PYTHONPATH=. python ledex_jax/data/demo/make_sft_demo.py   (from the repository root)
"""
from __future__ import annotations

import json
from pathlib import Path
from textwrap import dedent

# Each problem: entry point, task sentence, tests (asserts), wrong code, the index of the first test
# it fails, what that test sees ("actual": repr of the returned value, or "error": "Type: message";
# checked against the executor's feedback), the explanation of the bug, and the fixed code.
PROBLEMS = [
    dict(name="sum_of_squares", task="Write a function to compute the sum of the squares of the first n natural numbers.",
         tests=["assert sum_of_squares(3) == 14", "assert sum_of_squares(1) == 1", "assert sum_of_squares(5) == 55"],
         wrong="""
def sum_of_squares(n):
    return sum(i * i for i in range(n))
""", fails=0, actual="5",
         explanation="`range(n)` yields 0 .. n-1, so the loop squares 0, 1 and 2 for n = 3 and never includes n itself; the sum is 0 + 1 + 4 = 5 instead of 1 + 4 + 9 = 14. The range must run from 1 to n inclusive.",
         fixed="""
def sum_of_squares(n):
    return sum(i * i for i in range(1, n + 1))
"""),
    dict(name="reverse_words", task="Write a function to reverse the order of the words in a sentence (words are separated by single spaces).",
         tests=["assert reverse_words('hello world') == 'world hello'", "assert reverse_words('a b c') == 'c b a'", "assert reverse_words('single') == 'single'"],
         wrong="""
def reverse_words(s):
    return s[::-1]
""", fails=0, actual="'dlrow olleh'",
         explanation="`s[::-1]` reverses the characters of the whole string, which also spells every word backwards. The task is to reverse the order of the words only: split on spaces, reverse the list and join it again.",
         fixed="""
def reverse_words(s):
    return ' '.join(s.split(' ')[::-1])
"""),
    dict(name="count_vowels", task="Write a function to count the vowels (a, e, i, o, u, in either case) in a string.",
         tests=["assert count_vowels('Apple') == 2", "assert count_vowels('sky') == 0", "assert count_vowels('EDUCATION') == 5"],
         wrong="""
def count_vowels(s):
    return sum(1 for c in s if c in 'aeiou')
""", fails=0, actual="1",
         explanation="The membership test only checks lowercase vowels, so the capital 'A' in 'Apple' is not counted. Compare the lowercased character instead.",
         fixed="""
def count_vowels(s):
    return sum(1 for c in s if c.lower() in 'aeiou')
"""),
    dict(name="factorial", task="Write a function to compute the factorial of a non-negative integer n.",
         tests=["assert factorial(5) == 120", "assert factorial(0) == 1", "assert factorial(1) == 1"],
         wrong="""
def factorial(n):
    result = 0
    for i in range(1, n + 1):
        result *= i
    return result
""", fails=0, actual="0",
         explanation="The accumulator starts at 0, and multiplying 0 by anything stays 0, so every factorial comes out as 0. A product must start from 1.",
         fixed="""
def factorial(n):
    result = 1
    for i in range(1, n + 1):
        result *= i
    return result
"""),
    dict(name="is_palindrome", task="Write a function to check whether a string is a palindrome, ignoring letter case.",
         tests=["assert is_palindrome('Racecar') == True", "assert is_palindrome('abc') == False", "assert is_palindrome('Noon') == True"],
         wrong="""
def is_palindrome(s):
    return s == s[::-1]
""", fails=0, actual="False",
         explanation="The comparison is case-sensitive: 'Racecar' reversed is 'racecaR', which differs in the first and last letters. The string has to be lowercased before comparing it with its reverse.",
         fixed="""
def is_palindrome(s):
    t = s.lower()
    return t == t[::-1]
"""),
    dict(name="max_of_list", task="Write a function to find the largest number in a non-empty list without using the built-in max.",
         tests=["assert max_of_list([1, 5, 3]) == 5", "assert max_of_list([-3, -1, -2]) == -1", "assert max_of_list([7]) == 7"],
         wrong="""
def max_of_list(lst):
    best = 0
    for x in lst:
        if x > best:
            best = x
    return best
""", fails=1, actual="0",
         explanation="The running maximum starts at 0, which is larger than every element of an all-negative list, so 0 is returned although it is not in the list. Start from the first element instead.",
         fixed="""
def max_of_list(lst):
    best = lst[0]
    for x in lst[1:]:
        if x > best:
            best = x
    return best
"""),
    dict(name="fibonacci", task="Write a function to return the n-th Fibonacci number, where fibonacci(0) = 0 and fibonacci(1) = 1.",
         tests=["assert fibonacci(5) == 5", "assert fibonacci(0) == 0", "assert fibonacci(10) == 55"],
         wrong="""
def fibonacci(n):
    a, b = 1, 1
    for _ in range(n):
        a, b = b, a + b
    return a
""", fails=0, actual="8",
         explanation="The sequence is seeded with 1, 1, which shifts it by one: the loop computes the (n+1)-th number, 8 for n = 5. With fibonacci(0) = 0 the seeds must be 0 and 1.",
         fixed="""
def fibonacci(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a
"""),
    dict(name="remove_duplicates", task="Write a function to remove duplicates from a list while keeping the first occurrence of each element in its original order.",
         tests=["assert remove_duplicates([3, 1, 3, 2, 1]) == [3, 1, 2]", "assert remove_duplicates([]) == []", "assert remove_duplicates([5, 5, 5]) == [5]"],
         wrong="""
def remove_duplicates(lst):
    return list(set(lst))
""", fails=0, actual="[1, 2, 3]",
         explanation="A set removes duplicates but does not keep insertion order, so the result comes back as [1, 2, 3] instead of [3, 1, 2]. Track the elements already seen and append each new one in order.",
         fixed="""
def remove_duplicates(lst):
    seen = set()
    out = []
    for x in lst:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out
"""),
    dict(name="second_largest", task="Write a function to find the second largest distinct value in a list.",
         tests=["assert second_largest([1, 3, 2]) == 2", "assert second_largest([4, 4, 3]) == 3", "assert second_largest([10, 20, 20, 5]) == 10"],
         wrong="""
def second_largest(lst):
    return sorted(lst)[-2]
""", fails=1, actual="4",
         explanation="Taking the second-to-last element of the sorted list ignores duplicates: for [4, 4, 3] it picks the second 4. The values must be made distinct before sorting.",
         fixed="""
def second_largest(lst):
    return sorted(set(lst))[-2]
"""),
    dict(name="average", task="Write a function to compute the arithmetic mean of a non-empty list of numbers.",
         tests=["assert average([1, 2]) == 1.5", "assert average([2, 4, 6]) == 4", "assert average([5]) == 5"],
         wrong="""
def average(lst):
    return sum(lst) // len(lst)
""", fails=0, actual="1",
         explanation="`//` is floor division, so the fractional part of the mean is thrown away: 3 // 2 is 1, not 1.5. Use true division `/`.",
         fixed="""
def average(lst):
    return sum(lst) / len(lst)
"""),
    dict(name="char_frequency", task="Write a function to count how many times each character occurs in a string, returned as a dictionary.",
         tests=["assert char_frequency('aab') == {'a': 2, 'b': 1}", "assert char_frequency('') == {}", "assert char_frequency('xyx') == {'x': 2, 'y': 1}"],
         wrong="""
def char_frequency(s):
    counts = {}
    for c in s:
        counts[c] = counts.get(c, 0)
    return counts
""", fails=0, actual="{'a': 0, 'b': 0}",
         explanation="Each character's count is read with `counts.get(c, 0)` but never incremented, so every count stays 0. Add 1 when storing it back.",
         fixed="""
def char_frequency(s):
    counts = {}
    for c in s:
        counts[c] = counts.get(c, 0) + 1
    return counts
"""),
    dict(name="flatten", task="Write a function to flatten a list of lists into a single list.",
         tests=["assert flatten([[1, 2], [3]]) == [1, 2, 3]", "assert flatten([]) == []", "assert flatten([[], [4, 5]]) == [4, 5]"],
         wrong="""
def flatten(nested):
    out = []
    for sub in nested:
        out.append(sub)
    return out
""", fails=0, actual="[[1, 2], [3]]",
         explanation="`append` adds each inner list as a single element, so the result is still nested. `extend` adds the inner list's elements one by one.",
         fixed="""
def flatten(nested):
    out = []
    for sub in nested:
        out.extend(sub)
    return out
"""),
    dict(name="is_prime", task="Write a function to check whether an integer n is a prime number.",
         tests=["assert is_prime(7) == True", "assert is_prime(1) == False", "assert is_prime(9) == False"],
         wrong="""
def is_prime(n):
    for d in range(2, n):
        if n % d == 0:
            return False
    return True
""", fails=1, actual="True",
         explanation="For n = 1 the loop over range(2, 1) is empty, so the function falls through to True, but 1 is not prime. Numbers below 2 must be rejected first.",
         fixed="""
def is_prime(n):
    if n < 2:
        return False
    for d in range(2, int(n ** 0.5) + 1):
        if n % d == 0:
            return False
    return True
"""),
    dict(name="gcd", task="Write a function to compute the greatest common divisor of two positive integers.",
         tests=["assert gcd(12, 18) == 6", "assert gcd(7, 5) == 1", "assert gcd(10, 10) == 10"],
         wrong="""
def gcd(a, b):
    while b:
        a, b = b, a % b
    return b
""", fails=0, actual="0",
         explanation="The Euclidean loop stops when b becomes 0, and then the code returns b, which is always 0. The divisor is left in a.",
         fixed="""
def gcd(a, b):
    while b:
        a, b = b, a % b
    return a
"""),
    dict(name="celsius_to_fahrenheit", task="Write a function to convert a temperature from degrees Celsius to degrees Fahrenheit.",
         tests=["assert celsius_to_fahrenheit(100) == 212", "assert celsius_to_fahrenheit(0) == 32", "assert celsius_to_fahrenheit(-40) == -40"],
         wrong="""
def celsius_to_fahrenheit(c):
    return c * 9 / 5 - 32
""", fails=0, actual="148.0",
         explanation="The offset has the wrong sign: Fahrenheit is 9/5 of Celsius plus 32, not minus 32, so 100 C becomes 148 instead of 212.",
         fixed="""
def celsius_to_fahrenheit(c):
    return c * 9 / 5 + 32
"""),
    dict(name="count_words", task="Write a function to count the words in a string, where words are separated by one or more spaces.",
         tests=["assert count_words('hello world') == 2", "assert count_words('a  b c') == 3", "assert count_words('one') == 1"],
         wrong="""
def count_words(s):
    return len(s.split(' '))
""", fails=1, actual="4",
         explanation="`split(' ')` splits on every single space, so two spaces in a row produce an empty string that is counted as a word. `split()` with no argument splits on runs of whitespace.",
         fixed="""
def count_words(s):
    return len(s.split())
"""),
    dict(name="capitalize_words", task="Write a function to capitalize the first letter of every word in a sentence.",
         tests=["assert capitalize_words('hello world') == 'Hello World'", "assert capitalize_words('python') == 'Python'", "assert capitalize_words('a b') == 'A B'"],
         wrong="""
def capitalize_words(s):
    return s.capitalize()
""", fails=0, actual="'Hello world'",
         explanation="`str.capitalize` only upper-cases the first character of the whole string, so the second word stays lowercase. Each word has to be capitalized separately.",
         fixed="""
def capitalize_words(s):
    return ' '.join(w.capitalize() for w in s.split(' '))
"""),
    dict(name="find_index", task="Write a function to return the index of x in a list, or -1 if x does not occur.",
         tests=["assert find_index([4, 5, 6], 5) == 1", "assert find_index([1, 2], 5) == -1", "assert find_index([], 1) == -1"],
         wrong="""
def find_index(lst, x):
    return lst.index(x)
""", fails=1, error="ValueError: 5 is not in list",
         explanation="`list.index` raises ValueError when the element is missing instead of returning -1. Check membership first (or catch the error) and return -1.",
         fixed="""
def find_index(lst, x):
    return lst.index(x) if x in lst else -1
"""),
    dict(name="safe_divide", task="Write a function to divide a by b, returning None when b is zero.",
         tests=["assert safe_divide(6, 3) == 2", "assert safe_divide(1, 0) == None", "assert safe_divide(5, 2) == 2.5"],
         wrong="""
def safe_divide(a, b):
    return a / b
""", fails=1, error="ZeroDivisionError: division by zero",
         explanation="The zero divisor is never checked, so 1 / 0 raises ZeroDivisionError. Return None when b is 0 before dividing.",
         fixed="""
def safe_divide(a, b):
    if b == 0:
        return None
    return a / b
"""),
    dict(name="running_sum", task="Write a function to return the running (cumulative) sums of a list.",
         tests=["assert running_sum([1, 2, 3]) == [1, 3, 6]", "assert running_sum([]) == []", "assert running_sum([5, -5]) == [5, 0]"],
         wrong="""
def running_sum(lst):
    out = []
    total = 0
    for x in lst:
        out.append(total)
        total += x
    return out
""", fails=0, actual="[0, 1, 3]",
         explanation="The total is appended before the current element is added, so every entry lags one step behind and the first one is 0. Add x first, then append.",
         fixed="""
def running_sum(lst):
    out = []
    total = 0
    for x in lst:
        total += x
        out.append(total)
    return out
"""),
    dict(name="digit_sum", task="Write a function to compute the sum of the decimal digits of an integer (the sign is ignored).",
         tests=["assert digit_sum(123) == 6", "assert digit_sum(-123) == 6", "assert digit_sum(0) == 0"],
         wrong="""
def digit_sum(n):
    return sum(int(c) for c in str(n))
""", fails=1, error="ValueError: invalid literal for int() with base 10: '-'",
         explanation="For a negative number `str(n)` starts with '-', and `int('-')` raises ValueError. Take the absolute value before converting to a string.",
         fixed="""
def digit_sum(n):
    return sum(int(c) for c in str(abs(n)))
"""),
    dict(name="merge_sorted", task="Write a function to merge two sorted lists into one sorted list.",
         tests=["assert merge_sorted([1, 3, 5], [2, 4]) == [1, 2, 3, 4, 5]", "assert merge_sorted([], [1]) == [1]", "assert merge_sorted([2], []) == [2]"],
         wrong="""
def merge_sorted(a, b):
    out = []
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    return out
""", fails=0, actual="[1, 2, 3, 4]",
         explanation="The loop stops as soon as one list is used up, and whatever is left in the other list is dropped (the 5 here). Append the remaining tails of both lists after the loop.",
         fixed="""
def merge_sorted(a, b):
    out = []
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    return out + a[i:] + b[j:]
"""),
    dict(name="binary_search", task="Write a function to find the index of x in a sorted list using binary search, returning -1 if it is absent.",
         tests=["assert binary_search([1, 3, 5, 7], 7) == 3", "assert binary_search([1, 3, 5, 7], 4) == -1", "assert binary_search([2], 2) == 0"],
         wrong="""
def binary_search(lst, x):
    lo, hi = 0, len(lst) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if lst[mid] == x:
            return mid
        if lst[mid] < x:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1
""", fails=0, actual="-1",
         explanation="With an inclusive upper bound the loop condition must be `lo <= hi`; with `lo < hi` the search stops when one candidate is left without checking it, so the last element 7 is never compared.",
         fixed="""
def binary_search(lst, x):
    lo, hi = 0, len(lst) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if lst[mid] == x:
            return mid
        if lst[mid] < x:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1
"""),
    dict(name="rotate_right", task="Write a function to rotate a list to the right by k positions.",
         tests=["assert rotate_right([1, 2, 3, 4, 5], 2) == [4, 5, 1, 2, 3]", "assert rotate_right([1, 2], 0) == [1, 2]", "assert rotate_right([1, 2, 3], 3) == [1, 2, 3]"],
         wrong="""
def rotate_right(lst, k):
    return lst[k:] + lst[:k]
""", fails=0, actual="[3, 4, 5, 1, 2]",
         explanation="`lst[k:] + lst[:k]` rotates to the left. Rotating right by k moves the last k elements to the front: `lst[-k:] + lst[:-k]`, with k taken modulo the length so that k = 0 and k = len work.",
         fixed="""
def rotate_right(lst, k):
    if not lst:
        return lst
    k %= len(lst)
    return lst[len(lst) - k:] + lst[:len(lst) - k]
"""),
    dict(name="count_overlapping", task="Write a function to count the occurrences of a substring in a string, counting overlapping occurrences.",
         tests=["assert count_overlapping('aaaa', 'aa') == 3", "assert count_overlapping('abcabc', 'abc') == 2", "assert count_overlapping('abc', 'd') == 0"],
         wrong="""
def count_overlapping(s, sub):
    return s.count(sub)
""", fails=0, actual="2",
         explanation="`str.count` counts non-overlapping occurrences, so 'aa' in 'aaaa' is found at 0 and 2 only. Check every starting position instead.",
         fixed="""
def count_overlapping(s, sub):
    return sum(1 for i in range(len(s) - len(sub) + 1) if s[i:i + len(sub)] == sub)
"""),
    dict(name="to_binary", task="Write a function to convert a non-negative integer to its binary representation as a string without a prefix.",
         tests=["assert to_binary(5) == '101'", "assert to_binary(0) == '0'", "assert to_binary(8) == '1000'"],
         wrong="""
def to_binary(n):
    return bin(n)
""", fails=0, actual="'0b101'",
         explanation="`bin` returns the string with a '0b' prefix. Use `format(n, 'b')` (or strip the first two characters) to get the bare digits.",
         fixed="""
def to_binary(n):
    return format(n, 'b')
"""),
    dict(name="transpose", task="Write a function to transpose a matrix given as a list of rows.",
         tests=["assert transpose([[1, 2, 3], [4, 5, 6]]) == [[1, 4], [2, 5], [3, 6]]", "assert transpose([[1]]) == [[1]]", "assert transpose([[1, 2], [3, 4]]) == [[1, 3], [2, 4]]"],
         wrong="""
def transpose(m):
    return [[row[i] for row in m] for i in range(len(m))]
""", fails=0, actual="[[1, 4], [2, 5]]",
         explanation="The outer loop runs over the number of rows, but the transpose has one row per column of the input. For a 2x3 matrix only two of the three columns are produced; iterate over `len(m[0])`.",
         fixed="""
def transpose(m):
    return [[row[i] for row in m] for i in range(len(m[0]))]
"""),
    dict(name="is_anagram", task="Write a function to check whether two strings are anagrams of each other.",
         tests=["assert is_anagram('listen', 'silent') == True", "assert is_anagram('aab', 'abb') == False", "assert is_anagram('abc', 'cba') == True"],
         wrong="""
def is_anagram(a, b):
    return set(a) == set(b)
""", fails=1, actual="True",
         explanation="Comparing sets only checks which letters occur, not how often: 'aab' and 'abb' both have the set {'a', 'b'}. Compare the sorted strings (or letter counts).",
         fixed="""
def is_anagram(a, b):
    return sorted(a) == sorted(b)
"""),
    dict(name="longest_word", task="Write a function to return the longest word in a sentence; if several words are equally long, return the first one.",
         tests=["assert longest_word('cat dog bird fish') == 'bird'", "assert longest_word('a bb cc') == 'bb'", "assert longest_word('word') == 'word'"],
         wrong="""
def longest_word(s):
    best = ''
    for w in s.split():
        if len(w) >= len(best):
            best = w
    return best
""", fails=0, actual="'fish'",
         explanation="The `>=` comparison replaces the current best on ties, so the last of the equally long words wins ('fish' instead of 'bird'). Use a strict `>` to keep the first.",
         fixed="""
def longest_word(s):
    best = ''
    for w in s.split():
        if len(w) > len(best):
            best = w
    return best
"""),
    dict(name="count_pairs", task="Write a function to count the pairs of positions i < j in a list whose values add up to a target.",
         tests=["assert count_pairs([1, 2, 3, 4], 5) == 2", "assert count_pairs([1, 1, 1], 2) == 3", "assert count_pairs([], 3) == 0"],
         wrong="""
def count_pairs(lst, target):
    count = 0
    for i in range(len(lst)):
        for j in range(len(lst)):
            if lst[i] + lst[j] == target:
                count += 1
    return count
""", fails=0, actual="4",
         explanation="Both loops run over the whole list, so every pair is counted twice (as (i, j) and (j, i)) and an element can pair with itself. Start the inner loop at i + 1.",
         fixed="""
def count_pairs(lst, target):
    count = 0
    for i in range(len(lst)):
        for j in range(i + 1, len(lst)):
            if lst[i] + lst[j] == target:
                count += 1
    return count
"""),
    dict(name="clamp", task="Write a function to clamp x to the closed interval [lo, hi].",
         tests=["assert clamp(5, 0, 10) == 5", "assert clamp(-3, 0, 10) == 0", "assert clamp(42, 0, 10) == 10"],
         wrong="""
def clamp(x, lo, hi):
    return min(lo, max(x, hi))
""", fails=0, actual="0",
         explanation="The bounds are swapped: `max(x, hi)` is at least hi and `min(lo, ...)` then always returns lo. Raise x to lo with max and cap it at hi with min: `min(hi, max(x, lo))`.",
         fixed="""
def clamp(x, lo, hi):
    return min(hi, max(x, lo))
"""),
    dict(name="is_leap", task="Write a function to check whether a year is a leap year in the Gregorian calendar.",
         tests=["assert is_leap(2024) == True", "assert is_leap(1900) == False", "assert is_leap(2000) == True"],
         wrong="""
def is_leap(year):
    return year % 4 == 0
""", fails=1, actual="True",
         explanation="Divisibility by 4 is not enough: century years are leap years only when divisible by 400, so 1900 is not a leap year.",
         fixed="""
def is_leap(year):
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
"""),
    dict(name="chunk", task="Write a function to split a list into consecutive chunks of size n (the last chunk may be shorter).",
         tests=["assert chunk([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]", "assert chunk([1, 2], 2) == [[1, 2]]", "assert chunk([], 3) == []"],
         wrong="""
def chunk(lst, n):
    return [lst[i:i + n] for i in range(0, len(lst) - n, n)]
""", fails=0, actual="[[1, 2], [3, 4]]",
         explanation="The range stops at len(lst) - n, so the start index of the last (short) chunk is never reached and the 5 is lost. The starts must run up to len(lst).",
         fixed="""
def chunk(lst, n):
    return [lst[i:i + n] for i in range(0, len(lst), n)]
"""),
    dict(name="compress", task="Write a function to compress a string by replacing each run of a repeated character with the character followed by the run length.",
         tests=["assert compress('aaabcc') == 'a3b1c2'", "assert compress('') == ''", "assert compress('x') == 'x1'"],
         wrong="""
def compress(s):
    out = ''
    count = 1
    for i in range(1, len(s)):
        if s[i] == s[i - 1]:
            count += 1
        else:
            out += s[i - 1] + str(count)
            count = 1
    return out
""", fails=0, actual="'a3b1'",
         explanation="A run is written only when the next character differs, so the final run ('cc') is never written. After the loop, the last run must be appended too (when the string is not empty).",
         fixed="""
def compress(s):
    if not s:
        return ''
    out = ''
    count = 1
    for i in range(1, len(s)):
        if s[i] == s[i - 1]:
            count += 1
        else:
            out += s[i - 1] + str(count)
            count = 1
    return out + s[-1] + str(count)
"""),
    dict(name="product", task="Write a function to compute the product of a list of numbers; the product of an empty list is 1.",
         tests=["assert product([2, 3, 4]) == 24", "assert product([]) == 1", "assert product([-1, 5]) == -5"],
         wrong="""
def product(lst):
    result = lst[0]
    for x in lst[1:]:
        result *= x
    return result
""", fails=1, error="IndexError: list index out of range",
         explanation="Starting from `lst[0]` fails for an empty list with IndexError. Start the product at 1 and multiply every element in.",
         fixed="""
def product(lst):
    result = 1
    for x in lst:
        result *= x
    return result
"""),
    dict(name="snake_to_camel", task="Write a function to convert a snake_case identifier to lowerCamelCase.",
         tests=["assert snake_to_camel('hello_world') == 'helloWorld'", "assert snake_to_camel('a_b_c') == 'aBC'", "assert snake_to_camel('word') == 'word'"],
         wrong="""
def snake_to_camel(s):
    return ''.join(w.title() for w in s.split('_'))
""", fails=0, actual="'HelloWorld'",
         explanation="Every part is title-cased, including the first, which gives UpperCamelCase. lowerCamelCase keeps the first part as it is and capitalizes only the following parts.",
         fixed="""
def snake_to_camel(s):
    first, *rest = s.split('_')
    return first + ''.join(w.title() for w in rest)
"""),
    dict(name="median", task="Write a function to return the median of a list with an odd number of elements.",
         tests=["assert median([3, 1, 2]) == 2", "assert median([5]) == 5", "assert median([9, 7, 8, 1, 2]) == 7"],
         wrong="""
def median(lst):
    return lst[len(lst) // 2]
""", fails=0, actual="1",
         explanation="The middle element is taken from the list as given, but the median is the middle of the sorted values. Sort first.",
         fixed="""
def median(lst):
    return sorted(lst)[len(lst) // 2]
"""),
    dict(name="all_unique", task="Write a function to check whether all characters of a string are distinct (case-sensitive).",
         tests=["assert all_unique('abc') == True", "assert all_unique('Aa') == True", "assert all_unique('hello') == False"],
         wrong="""
def all_unique(s):
    return len(set(s.lower())) == len(s)
""", fails=1, actual="False",
         explanation="Lowercasing merges 'A' and 'a' into one character, but the check is case-sensitive, so 'Aa' has two distinct characters. Build the set from the string unchanged.",
         fixed="""
def all_unique(s):
    return len(set(s)) == len(s)
"""),
    dict(name="count_digits", task="Write a function to count the decimal digits of an integer (the sign is not a digit).",
         tests=["assert count_digits(12345) == 5", "assert count_digits(-45) == 2", "assert count_digits(0) == 1"],
         wrong="""
def count_digits(n):
    return len(str(n))
""", fails=1, actual="3",
         explanation="`str(-45)` is '-45', so the minus sign is counted as a digit. Use the absolute value.",
         fixed="""
def count_digits(n):
    return len(str(abs(n)))
"""),
    dict(name="zip_to_dict", task="Write a function to build a dictionary from a list of keys and a list of values; keys without a value map to None.",
         tests=["assert zip_to_dict(['a', 'b'], [1, 2]) == {'a': 1, 'b': 2}", "assert zip_to_dict(['a', 'b', 'c'], [1, 2]) == {'a': 1, 'b': 2, 'c': None}", "assert zip_to_dict([], []) == {}"],
         wrong="""
def zip_to_dict(keys, values):
    return dict(zip(keys, values))
""", fails=1, actual="{'a': 1, 'b': 2}",
         explanation="`zip` stops at the shorter list, so the extra key 'c' is dropped instead of being mapped to None. Iterate over the keys and look up a value only where one exists.",
         fixed="""
def zip_to_dict(keys, values):
    return {k: values[i] if i < len(values) else None for i, k in enumerate(keys)}
"""),
    dict(name="digital_root", task="Write a function to compute the digital root of a non-negative integer: repeatedly sum its digits until a single digit remains.",
         tests=["assert digital_root(99) == 9", "assert digital_root(5) == 5", "assert digital_root(12345) == 6"],
         wrong="""
def digital_root(n):
    return sum(int(c) for c in str(n))
""", fails=0, actual="18",
         explanation="The digits are summed only once; 99 gives 18, which still has two digits. Repeat the digit sum while the number has more than one digit.",
         fixed="""
def digital_root(n):
    while n >= 10:
        n = sum(int(c) for c in str(n))
    return n
"""),
    dict(name="is_sorted", task="Write a function to check whether a list is sorted in non-decreasing order.",
         tests=["assert is_sorted([1, 2, 2, 3]) == True", "assert is_sorted([3, 1]) == False", "assert is_sorted([]) == True"],
         wrong="""
def is_sorted(lst):
    return all(lst[i] < lst[i + 1] for i in range(len(lst) - 1))
""", fails=0, actual="False",
         explanation="The strict `<` rejects equal neighbours, but non-decreasing order allows them (2, 2). Use `<=`.",
         fixed="""
def is_sorted(lst):
    return all(lst[i] <= lst[i + 1] for i in range(len(lst) - 1))
"""),
    dict(name="last_n", task="Write a function to return the last n characters of a string (an empty string for n = 0).",
         tests=["assert last_n('hello', 2) == 'lo'", "assert last_n('abc', 0) == ''", "assert last_n('abc', 5) == 'abc'"],
         wrong="""
def last_n(s, n):
    return s[-n:]
""", fails=1, actual="'abc'",
         explanation="For n = 0 the slice is `s[-0:]`, which is `s[0:]`, the whole string. Slice from `len(s) - n` (not below 0) instead.",
         fixed="""
def last_n(s, n):
    return s[max(len(s) - n, 0):]
"""),
    dict(name="vowel_positions", task="Write a function to return the 1-based positions of the vowels in a lowercase string.",
         tests=["assert vowel_positions('banana') == [2, 4, 6]", "assert vowel_positions('xyz') == []", "assert vowel_positions('a') == [1]"],
         wrong="""
def vowel_positions(s):
    return [i for i, c in enumerate(s) if c in 'aeiou']
""", fails=0, actual="[1, 3, 5]",
         explanation="`enumerate` counts from 0, so the positions are 0-based and every one is one too small. Start the count at 1.",
         fixed="""
def vowel_positions(s):
    return [i for i, c in enumerate(s, start=1) if c in 'aeiou']
"""),
]

FEEDBACK_HEADER = "The code above fails the given unit test:"


def expected_line(problem: dict) -> str:
    """The feedback line the author expects (the executor's feedback must start with it)."""
    test = problem["tests"][problem["fails"]]
    line = f"# Error: {problem['error']}" if "error" in problem else f"# Actual output: {problem['actual']}"
    return f"{FEEDBACK_HEADER}\n{test}\n{line}"


def run_solutions(problems: list[dict]) -> tuple[list[str], list[bool]]:
    """(feedback of each wrong solution, whether each fix passes), from the sandboxed executor
    that produces feedback for real collected data, so the demo reads exactly like it."""
    from executors import ExecutionPool, Program, TestCase
    tests = [[TestCase.assertion(t) for t in p["tests"]] for p in problems]
    programs = [Program(f"w{i}", code(p["wrong"]), t) for i, (p, t) in enumerate(zip(problems, tests))]
    programs += [Program(f"f{i}", code(p["fixed"]), t) for i, (p, t) in enumerate(zip(problems, tests))]
    # (the demo's own hand-written solutions: allowed to run without namespaces, loudly)
    with ExecutionPool(workers=2, per_test_timeout=5.0, allow_unsandboxed=True) as pool:
        results = pool.run(programs)
    n = len(problems)
    return [r.feedback for r in results[:n]], [r.passed for r in results[n:]]


def code(text: str) -> str:
    return dedent(text).strip("\n")


def problem_text(problem: dict) -> str:
    return f"{problem['task']}\nYour code should pass this test:\n{problem['tests'][0]}"


def records(problem: dict, index: int, feedback: str) -> list[dict[str, str]]:
    source = problem_row(problem, index)["source"]
    wrong, fixed = code(problem["wrong"]), code(problem["fixed"])
    base = dict(problem=problem_text(problem), refined_code=fixed, source=source)
    return [
        dict(base, id=f"{source}/codegen", wrong_code="", feedback="", explanation="", format="codegen"),
        dict(base, id=f"{source}/refine", wrong_code=wrong, feedback=feedback, explanation="", format="refine"),
        dict(base, id=f"{source}/explain_refine", wrong_code=wrong, feedback=feedback,
             explanation=problem["explanation"], format="explain_refine"),
    ]


def problem_row(problem: dict, index: int) -> dict:
    return {"source": f"demo/{index:03d}_{problem['name']}", "entry_point": problem["name"],
            "problem": problem_text(problem), "tests": problem["tests"]}


def main() -> None:
    from ledex_jax.data.records import write_sft_jsonl  # validates every record on the way out
    feedbacks, fixed_pass = run_solutions(PROBLEMS)
    for p, fb, ok in zip(PROBLEMS, feedbacks, fixed_pass):
        if not fb.startswith(expected_line(p)) or not ok:
            raise SystemExit(f"{p['name']}: expected feedback {expected_line(p)!r}, got {fb!r}; fix passes: {ok}")
    here = Path(__file__).parent
    n = write_sft_jsonl(here / "sft_demo.jsonl",
                        [r for i, (p, fb) in enumerate(zip(PROBLEMS, feedbacks)) for r in records(p, i, fb)])
    with (here / "sft_demo_problems.jsonl").open("w", encoding="utf-8") as f:
        for i, p in enumerate(PROBLEMS):
            f.write(json.dumps(problem_row(p, i)) + "\n")
    print(f"wrote {n} records ({len(PROBLEMS)} problems) to {here}")


if __name__ == "__main__":
    main()
